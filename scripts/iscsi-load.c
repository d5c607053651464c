/*
 * iscsi-load: a small load generator on libiscsi (the initiator QEMU
 * uses), so that `make bench` drives shareless and tgtd through the same
 * real initiator. Sequential or random reads or writes of a fixed block
 * size at a fixed queue depth for a fixed time; prints MiB/s and IOPS.
 *
 * usage: iscsi-load URL read|write seq|rand BLOCK_BYTES QUEUE_DEPTH SECONDS
 */
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct load {
	struct iscsi_context *iscsi;
	int lun, write, random;
	uint32_t bs, block_size;
	uint64_t blocks, next, done, inflight, deadline_ns;
	unsigned char *buf;
	int failed;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void submit(struct load *l);

static void done_cb(struct iscsi_context *iscsi, int status, void *data, void *priv)
{
	struct load *l = priv;
	struct scsi_task *task = data;
	(void)iscsi;
	if (status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "iscsi-load: command failed: %s\n", iscsi_get_error(l->iscsi));
		l->failed = 1;
	}
	scsi_free_scsi_task(task);
	l->inflight--;
	l->done++;
	if (!l->failed && now_ns() < l->deadline_ns)
		submit(l);
}

static void submit(struct load *l)
{
	uint32_t n = l->bs / l->block_size;
	uint64_t span = l->blocks / n;
	uint64_t lba;
	struct scsi_task *t;

	if (l->random)
		lba = ((uint64_t)rand() * RAND_MAX + rand()) % span * n;
	else {
		lba = l->next % span * n;
		l->next++;
	}
	if (l->write)
		t = iscsi_write16_task(l->iscsi, l->lun, lba, l->buf, l->bs, l->block_size,
				       0, 0, 0, 0, 0, done_cb, l);
	else
		t = iscsi_read16_task(l->iscsi, l->lun, lba, l->bs, l->block_size,
				      0, 0, 0, 0, 0, done_cb, l);
	if (t == NULL) {
		fprintf(stderr, "iscsi-load: cannot queue: %s\n", iscsi_get_error(l->iscsi));
		l->failed = 1;
		return;
	}
	l->inflight++;
}

int main(int argc, char **argv)
{
	struct load l = {0};
	struct iscsi_url *url;
	struct scsi_task *rc;
	struct scsi_readcapacity16 *cap;
	int qd, seconds, i;
	uint64_t start, elapsed;

	if (argc != 7) {
		fprintf(stderr, "usage: iscsi-load URL read|write seq|rand BLOCK_BYTES QUEUE_DEPTH SECONDS\n");
		return 2;
	}
	l.write = strcmp(argv[2], "write") == 0;
	l.random = strcmp(argv[3], "rand") == 0;
	l.bs = atoi(argv[4]);
	qd = atoi(argv[5]);
	seconds = atoi(argv[6]);

	l.iscsi = iscsi_create_context("iqn.2026-11.org.shareless:iscsi-load");
	url = iscsi_parse_full_url(l.iscsi, argv[1]);
	if (url == NULL) {
		fprintf(stderr, "iscsi-load: bad URL: %s\n", iscsi_get_error(l.iscsi));
		return 2;
	}
	iscsi_set_targetname(l.iscsi, url->target);
	iscsi_set_session_type(l.iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(l.iscsi, ISCSI_HEADER_DIGEST_NONE);
	if (url->user[0])
		iscsi_set_initiator_username_pwd(l.iscsi, url->user, url->passwd);
	if (iscsi_full_connect_sync(l.iscsi, url->portal, url->lun) != 0) {
		fprintf(stderr, "iscsi-load: login: %s\n", iscsi_get_error(l.iscsi));
		return 1;
	}
	l.lun = url->lun;
	rc = iscsi_readcapacity16_sync(l.iscsi, l.lun);
	if (rc == NULL || rc->status != SCSI_STATUS_GOOD || (cap = scsi_datain_unmarshall(rc)) == NULL) {
		fprintf(stderr, "iscsi-load: READ CAPACITY(16) failed\n");
		return 1;
	}
	l.block_size = cap->block_length;
	l.blocks = cap->returned_lba + 1;
	l.buf = malloc(l.bs);
	memset(l.buf, 0x5a, l.bs);
	srand(42);

	start = now_ns();
	l.deadline_ns = start + (uint64_t)seconds * 1000000000ull;
	for (i = 0; i < qd; i++)
		submit(&l);
	while (l.inflight > 0) {
		struct pollfd pfd = {.fd = iscsi_get_fd(l.iscsi), .events = iscsi_which_events(l.iscsi)};
		if (poll(&pfd, 1, 1000) < 0 || iscsi_service(l.iscsi, pfd.revents) < 0) {
			fprintf(stderr, "iscsi-load: %s\n", iscsi_get_error(l.iscsi));
			return 1;
		}
	}
	elapsed = now_ns() - start;
	if (l.failed)
		return 1;
	printf("%.1f MiB/s %.0f IOPS\n",
	       (double)l.done * l.bs / (1 << 20) / (elapsed / 1e9), l.done / (elapsed / 1e9));
	iscsi_logout_sync(l.iscsi);
	iscsi_destroy_context(l.iscsi);
	return 0;
}
