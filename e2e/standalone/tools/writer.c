/*
 * A real-initiator load for Spindle's safety tests, on libiscsi's async API.
 *
 *   writer URL COUNT QD [fua]
 *
 * Writes COUNT 4 KiB blocks in order (write i goes to byte offset i*4096), keeping QD
 * WRITE(16)s in flight, optionally with FUA. Block i holds the 8-byte big-endian sequence
 * number i followed by the byte (i & 0xff) repeated. Prints one line per completion:
 *   GOOD i            the target answered GOOD
 *   CHECK i KEY ASC ASCQ   CHECK CONDITION with that sense (hex)
 *   ERROR i           no SCSI status (connection lost, cancelled)
 * After the first non-GOOD answer it submits at most 64 more writes, then stops.
 * Exits 0 when every submitted write got an answer (a SCSI status); 1 when one got none
 * (the connection went away with writes in flight, or a write was cancelled).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "session.h"

#define BLOCK 4096

static long next_i, count, inflight, answered, unanswered, after_fail = -1;
static int lun, fua, stopping;

struct req {
	long i;
	unsigned char buf[BLOCK];
};

static void submit(struct iscsi_context *iscsi);

static void done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data)
{
	struct req *r = private_data;
	struct scsi_task *task = command_data;
	if (status == SCSI_STATUS_GOOD) {
		printf("GOOD %ld\n", r->i);
	} else if (status == SCSI_STATUS_CHECK_CONDITION && task) {
		printf("CHECK %ld %02x %02x %02x\n", r->i, task->sense.key,
		       (task->sense.ascq >> 8) & 0xff, task->sense.ascq & 0xff);
	} else {
		printf("ERROR %ld\n", r->i);
		unanswered++;
	}
	if (status != SCSI_STATUS_GOOD && after_fail < 0)
		after_fail = 0;
	fflush(stdout);
	if (task)
		scsi_free_scsi_task(task);
	free(r);
	inflight--;
	answered++;
	if (status == SCSI_STATUS_ERROR || status == SCSI_STATUS_CANCELLED)
		stopping = 1;
	if (!stopping)
		submit(iscsi);
}

static void submit(struct iscsi_context *iscsi)
{
	if (next_i >= count || (after_fail >= 0 && after_fail >= 64))
		return;
	struct req *r = malloc(sizeof *r);
	if (!r)
		exit(2);
	r->i = next_i++;
	if (after_fail >= 0)
		after_fail++;
	memset(r->buf, (int)(r->i & 0xff), BLOCK);
	for (int b = 0; b < 8; b++)
		r->buf[b] = (unsigned char)((uint64_t)r->i >> (56 - 8 * b));
	if (!iscsi_write16_task(iscsi, lun, (uint64_t)r->i * (BLOCK / 512), r->buf, BLOCK, 512,
				0, 0, fua, 0, 0, done, r)) {
		printf("ERROR %ld\n", r->i);
		unanswered++;
		free(r);
		stopping = 1;
		return;
	}
	inflight++;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: writer URL COUNT QD [fua]\n");
		return 2;
	}
	count = atol(argv[2]);
	long qd = atol(argv[3]);
	fua = argc > 4 && strcmp(argv[4], "fua") == 0;
	struct iscsi_context *iscsi = login_url(argv[1], "iqn.2026-11.dev.spindle:test.writer", &lun);
	if (!iscsi)
		return 2;
	for (long k = 0; k < qd; k++)
		submit(iscsi);
	service_until_idle(iscsi, &inflight);
	fprintf(stderr, "writer: submitted %ld, answered %ld, unanswered %ld\n", next_i,
		answered - unanswered, unanswered + inflight);
	return unanswered + inflight > 0 ? 1 : 0;
}
