/*
 * One iSCSI session held open and driven line by line, on libiscsi's sync API: for checks that
 * need a session that lives across a change on the target (a Device grown, an ACL edited).
 *
 *   probe URL INITIATOR
 *
 * Logs INITIATOR in to the LUN of URL (no reconnect: a lost connection ends the probe) and
 * prints "READY". Then reads commands from stdin, one per line, and answers each with a line:
 *   tur        TEST UNIT READY          -> "GOOD"
 *   rc16       READ CAPACITY(16)        -> "GOOD LAST_LBA BLOCK_LENGTH"
 *   rc10       READ CAPACITY(10)        -> "GOOD LAST_LBA BLOCK_LENGTH"
 *   any of them, not GOOD               -> "CHECK KEY ASC ASCQ" (hex) or "STATUS N"
 * While waiting for a command it keeps the connection serviced (NOP-In pings answered); when
 * the target closes the connection it prints "CLOSED" and exits 1. EOF on stdin: exits 0.
 * Login failure: "LOGIN-FAILED reason" on stdout, exit 2.
 */
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

static void answer(struct scsi_task *task, int capacity16, int capacity10)
{
	if (!task) {
		printf("CLOSED\n");
		fflush(stdout);
		exit(1);
	}
	if (task->status == SCSI_STATUS_GOOD) {
		if (capacity16) {
			struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(task);
			if (!rc)
				printf("STATUS unparsable\n");
			else
				printf("GOOD %" PRIu64 " %u\n", rc->returned_lba, rc->block_length);
		} else if (capacity10) {
			struct scsi_readcapacity10 *rc = scsi_datain_unmarshall(task);
			if (!rc)
				printf("STATUS unparsable\n");
			else
				printf("GOOD %u %u\n", rc->lba, rc->block_size);
		} else {
			printf("GOOD\n");
		}
	} else if (task->status == SCSI_STATUS_CHECK_CONDITION) {
		printf("CHECK %02x %02x %02x\n", task->sense.key, (task->sense.ascq >> 8) & 0xff,
		       task->sense.ascq & 0xff);
	} else if (task->status == SCSI_STATUS_ERROR || task->status == SCSI_STATUS_CANCELLED) {
		printf("CLOSED\n");
		fflush(stdout);
		exit(1);
	} else {
		printf("STATUS %d\n", task->status);
	}
	fflush(stdout);
	scsi_free_scsi_task(task);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: probe URL INITIATOR\n");
		return 2;
	}
	struct iscsi_context *iscsi = iscsi_create_context(argv[2]);
	struct iscsi_url *u = iscsi_parse_full_url(iscsi, argv[1]);
	if (!u) {
		printf("LOGIN-FAILED bad url: %s\n", iscsi_get_error(iscsi));
		return 2;
	}
	iscsi_set_noautoreconnect(iscsi, 1);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	iscsi_set_targetname(iscsi, u->target);
	int lun = u->lun;
	if (iscsi_full_connect_sync(iscsi, u->portal, lun) != 0) {
		printf("LOGIN-FAILED %s\n", iscsi_get_error(iscsi));
		return 2;
	}
	printf("READY\n");
	fflush(stdout);
	char line[64];
	for (;;) {
		struct pollfd pfd[2] = {
			{.fd = 0, .events = POLLIN},
			{.fd = iscsi_get_fd(iscsi), .events = iscsi_which_events(iscsi)},
		};
		if (poll(pfd, 2, 1000) < 0)
			continue;
		if (pfd[1].revents) {
			if (iscsi_service(iscsi, pfd[1].revents) < 0 ||
			    (pfd[1].revents & (POLLHUP | POLLERR))) {
				printf("CLOSED\n");
				fflush(stdout);
				return 1;
			}
		}
		if (!(pfd[0].revents & (POLLIN | POLLHUP)))
			continue;
		if (!fgets(line, sizeof line, stdin))
			return 0;
		line[strcspn(line, "\r\n")] = 0;
		if (strcmp(line, "tur") == 0)
			answer(iscsi_testunitready_sync(iscsi, lun), 0, 0);
		else if (strcmp(line, "rc16") == 0)
			answer(iscsi_readcapacity16_sync(iscsi, lun), 1, 0);
		else if (strcmp(line, "rc10") == 0)
			answer(iscsi_readcapacity10_sync(iscsi, lun, 0, 0), 0, 1);
		else {
			printf("UNKNOWN %s\n", line);
			fflush(stdout);
		}
	}
}
