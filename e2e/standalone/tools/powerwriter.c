/*
 * The load of Spindle's power-cut test, on libiscsi's async API.
 *
 *   powerwriter URL BLOCKS QD OPS SEED PLAIN_AFTER [thin]
 *
 * Keeps QD commands in flight on the first BLOCKS 4 KiB blocks of the LUN, chosen at random
 * (SEED): WRITE(16), WRITE(16) with FUA, SYNCHRONIZE CACHE(10) of the whole LUN and, with
 * `thin`, UNMAP of one block. No two commands on one block are in flight at once, so each
 * block's commands are ordered. A write of version v to block b fills it with an 8-byte
 * magic, b and v (big-endian) and the byte (b * 31 + v) & 0xff. After PLAIN_AFTER
 * submissions only plain writes and unmaps follow (nothing makes them durable), so that a
 * power cut then has acknowledged data to lose.
 * Prints one line per event, in the order they happened:
 *   S seq kind block version   submitted (kind W write, F FUA write, U unmap, C sync cache)
 *   A seq G                    answered GOOD
 *   A seq K key asc ascq       answered CHECK CONDITION
 *   A seq E                    no answer (connection gone, cancelled)
 * Stops after OPS submissions or when the connection is lost; exits 0.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "session.h"

#define BLOCK 4096
static const unsigned char MAGIC[8] = {'S', 'P', 'N', 'D', 'L', 'P', 'W', 'R'};

static long blocks, ops, submitted, inflight, plain_after;
static int lun, thin, stopping;
static uint64_t *version;
static char *busy;

struct req {
	long seq;
	long block;
	struct unmap_list um;
	unsigned char buf[BLOCK];
};

static void submit(struct iscsi_context *iscsi);

static void done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data)
{
	struct req *r = private_data;
	struct scsi_task *task = command_data;
	if (status == SCSI_STATUS_GOOD)
		printf("A %ld G\n", r->seq);
	else if (status == SCSI_STATUS_CHECK_CONDITION && task)
		printf("A %ld K %02x %02x %02x\n", r->seq, task->sense.key,
		       (task->sense.ascq >> 8) & 0xff, task->sense.ascq & 0xff);
	else
		printf("A %ld E\n", r->seq);
	if (r->seq % 256 == 0)
		fflush(stdout);
	if (task)
		scsi_free_scsi_task(task);
	if (r->block >= 0)
		busy[r->block] = 0;
	free(r);
	inflight--;
	if (status == SCSI_STATUS_ERROR || status == SCSI_STATUS_CANCELLED)
		stopping = 1;
	if (!stopping)
		submit(iscsi);
}

static void submit(struct iscsi_context *iscsi)
{
	if (submitted >= ops || stopping)
		return;
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		exit(2);
	r->seq = submitted++;
	int dice = rand() % 100;
	/* Few syncs, so that a cut finds acknowledged writes not yet durable. */
	char kind = dice < 62 ? 'W' : dice < 80 ? 'F' : dice < 84 ? 'C' : (thin ? 'U' : 'W');
	if (submitted > plain_after && (kind == 'F' || kind == 'C'))
		kind = 'W';
	struct scsi_task *t;
	if (kind == 'C') {
		r->block = -1;
		printf("S %ld C -1 0\n", r->seq);
		t = iscsi_synchronizecache10_task(iscsi, lun, 0, 0, 0, 0, done, r);
	} else {
		long b;
		do {
			b = rand() % blocks;
		} while (busy[b]);
		busy[b] = 1;
		r->block = b;
		uint64_t v = ++version[b];
		printf("S %ld %c %ld %" PRIu64 "\n", r->seq, kind, b, v);
		if (kind == 'U') {
			r->um.lba = (uint64_t)b * (BLOCK / 512);
			r->um.num = BLOCK / 512;
			t = iscsi_unmap_task(iscsi, lun, 0, 0, &r->um, 1, done, r);
		} else {
			memset(r->buf, (int)((b * 31 + v) & 0xff), BLOCK);
			memcpy(r->buf, MAGIC, 8);
			for (int i = 0; i < 8; i++) {
				r->buf[8 + i] = (unsigned char)((uint64_t)b >> (56 - 8 * i));
				r->buf[16 + i] = (unsigned char)(v >> (56 - 8 * i));
			}
			t = iscsi_write16_task(iscsi, lun, (uint64_t)b * (BLOCK / 512), r->buf, BLOCK,
					       512, 0, 0, kind == 'F', 0, 0, done, r);
		}
	}
	if (!t) {
		printf("A %ld E\n", r->seq);
		if (r->block >= 0)
			busy[r->block] = 0;
		free(r);
		stopping = 1;
		return;
	}
	inflight++;
}

int main(int argc, char **argv)
{
	if (argc < 7) {
		fprintf(stderr, "usage: powerwriter URL BLOCKS QD OPS SEED PLAIN_AFTER [thin]\n");
		return 2;
	}
	blocks = atol(argv[2]);
	long qd = atol(argv[3]);
	ops = atol(argv[4]);
	srand((unsigned)atol(argv[5]));
	plain_after = atol(argv[6]);
	thin = argc > 7 && strcmp(argv[7], "thin") == 0;
	version = calloc((size_t)blocks, sizeof *version);
	busy = calloc((size_t)blocks, 1);
	if (!version || !busy || qd >= blocks)
		return 2;
	setvbuf(stdout, NULL, _IOFBF, 1 << 20);
	struct iscsi_context *iscsi = login_url(argv[1], "iqn.2026-11.dev.spindle:test.powerwriter", &lun);
	if (!iscsi)
		return 2;
	/* The power-on unit attention. */
	struct scsi_task *tur = iscsi_testunitready_sync(iscsi, lun);
	if (tur)
		scsi_free_scsi_task(tur);
	for (long k = 0; k < qd; k++)
		submit(iscsi);
	service_until_idle(iscsi, &inflight);
	fflush(stdout);
	fprintf(stderr, "powerwriter: submitted %ld, unanswered %ld\n", submitted, inflight);
	return 0;
}
