/*
 * What Spindle's C test initiators share: logging in to the LUN of an iscsi:// URL, and
 * driving the async API until nothing is in flight.
 */
#ifndef SPINDLE_TEST_SESSION_H
#define SPINDLE_TEST_SESSION_H

#include <poll.h>
#include <stdio.h>
#include <iscsi/iscsi.h>

/* Logs `initiator` in to the LUN `url` names (no reconnects: a lost connection is an error
 * the caller sees). Returns NULL after printing why. */
static struct iscsi_context *login_url(const char *url, const char *initiator, int *lun)
{
	struct iscsi_context *iscsi = iscsi_create_context(initiator);
	struct iscsi_url *u = iscsi_parse_full_url(iscsi, url);
	if (!u) {
		fprintf(stderr, "bad url: %s\n", iscsi_get_error(iscsi));
		return NULL;
	}
	iscsi_set_noautoreconnect(iscsi, 1);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	iscsi_set_targetname(iscsi, u->target);
	*lun = u->lun;
	if (iscsi_full_connect_sync(iscsi, u->portal, u->lun) != 0) {
		fprintf(stderr, "login failed: %s\n", iscsi_get_error(iscsi));
		return NULL;
	}
	return iscsi;
}

/* Services the connection until `*inflight` is 0 or the connection is gone. */
static void service_until_idle(struct iscsi_context *iscsi, long *inflight)
{
	while (*inflight > 0) {
		struct pollfd pfd = {.fd = iscsi_get_fd(iscsi), .events = iscsi_which_events(iscsi)};
		if (poll(&pfd, 1, 1000) < 0)
			break;
		if (iscsi_service(iscsi, pfd.revents) < 0)
			break; /* connection gone: what is left never got an answer */
	}
}

#endif
