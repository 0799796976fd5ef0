/*
 * fswriter: writes numbered 4 KiB blocks into a file on a mounted file system with O_DIRECT,
 * from several threads at once, and reports which writes the kernel acknowledged, so that the
 * host can check them in the LUN's backing file after a drain.
 *
 *   fswriter FILE SIZE_MIB THREADS
 *
 * First the file is filled with zeros and fsynced (its extents are then allocated and written,
 * so later O_DIRECT writes go straight to the disk without any metadata change), and its extent
 * map is printed as "EXTENT <file offset> <disk offset> <length>" (bytes, from FIEMAP). Then
 * every thread takes the next block number and writes it once; block n holds "SPKDRAIN", n as a
 * little-endian u64, then the byte n & 0xff repeated. Each write prints one line:
 *   G <block>                 the write returned success (the disk acknowledged it)
 *   E <block> <errno> <ms>    it failed, <ms> after the writer started; the thread stops
 * The writer ends when every thread has stopped or the file is full, and prints
 * "END <good> <failed>". Built static on the host (gcc -static -pthread) and run in the guest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define MAX_EXTENTS 512

static int fd;
static uint64_t nblocks;
static uint64_t next_block;
static uint64_t good, failed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct timespec t0;

static long elapsed_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
}

static void die(const char *what)
{
	fprintf(stderr, "fswriter: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void fill_zeros(const char *path, uint64_t bytes)
{
	static char zeros[1 << 20];
	int zfd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (zfd < 0)
		die("create");
	for (uint64_t off = 0; off < bytes; off += sizeof(zeros))
		if (write(zfd, zeros, sizeof(zeros)) != (ssize_t)sizeof(zeros))
			die("fill");
	if (fsync(zfd) != 0)
		die("fsync");
	close(zfd);
}

static void print_extents(void)
{
	size_t size = sizeof(struct fiemap) + MAX_EXTENTS * sizeof(struct fiemap_extent);
	struct fiemap *map = calloc(1, size);
	if (!map)
		die("calloc");
	map->fm_length = FIEMAP_MAX_OFFSET;
	map->fm_flags = FIEMAP_FLAG_SYNC;
	map->fm_extent_count = MAX_EXTENTS;
	if (ioctl(fd, FS_IOC_FIEMAP, map) != 0)
		die("FIEMAP");
	for (unsigned i = 0; i < map->fm_mapped_extents; i++) {
		struct fiemap_extent *e = &map->fm_extents[i];
		if (e->fe_flags & (FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_DELALLOC |
				   FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_ENCODED)) {
			fprintf(stderr, "fswriter: extent %u has flags %#x: not plain data\n", i,
				e->fe_flags);
			exit(2);
		}
		printf("EXTENT %llu %llu %llu\n", (unsigned long long)e->fe_logical,
		       (unsigned long long)e->fe_physical, (unsigned long long)e->fe_length);
	}
	if (map->fm_mapped_extents == MAX_EXTENTS) {
		fprintf(stderr, "fswriter: more than %d extents\n", MAX_EXTENTS);
		exit(2);
	}
	fflush(stdout);
	free(map);
}

static void *writer(void *arg)
{
	(void)arg;
	char *buf;
	if (posix_memalign((void **)&buf, BLOCK, BLOCK) != 0)
		return NULL;
	for (;;) {
		uint64_t n = __atomic_fetch_add(&next_block, 1, __ATOMIC_SEQ_CST);
		if (n >= nblocks)
			break;
		memcpy(buf, "SPKDRAIN", 8);
		memcpy(buf + 8, &n, 8);
		memset(buf + 16, (int)(n & 0xff), BLOCK - 16);
		ssize_t w = pwrite(fd, buf, BLOCK, (off_t)(n * BLOCK));
		int err = w == BLOCK ? 0 : (w < 0 ? errno : EIO);
		pthread_mutex_lock(&lock);
		if (err == 0) {
			good++;
			printf("G %llu\n", (unsigned long long)n);
		} else {
			failed++;
			printf("E %llu %d %ld\n", (unsigned long long)n, err, elapsed_ms());
		}
		fflush(stdout);
		pthread_mutex_unlock(&lock);
		if (err != 0)
			break;
	}
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: fswriter FILE SIZE_MIB THREADS\n");
		return 2;
	}
	uint64_t mib = strtoull(argv[2], NULL, 10);
	int threads = atoi(argv[3]);
	if (mib == 0 || threads < 1 || threads > 64) {
		fprintf(stderr, "fswriter: SIZE_MIB must be > 0 and THREADS 1..64\n");
		return 2;
	}
	nblocks = mib * (1 << 20) / BLOCK;
	fill_zeros(argv[1], mib << 20);
	fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0)
		die("open O_DIRECT");
	print_extents();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_t tids[64];
	for (int i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, writer, NULL) != 0)
			die("pthread_create");
	for (int i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	printf("END %llu %llu\n", (unsigned long long)good, (unsigned long long)failed);
	return 0;
}
