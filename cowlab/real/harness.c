/*
 * cowlab real-kernel harness.
 *
 * Runs a cowlab scenario (translated by `cowlab real` into a small line-based
 * script, see cowlab/real/script.py) with real system calls and prints one JSON
 * document on stdout: per step its status, per stored page what the kernel did.
 *
 * Self-contained: libc and Linux UAPI headers only (io_uring through raw
 * syscalls).  Every address space of the scenario (an "mm") is a separate
 * process (a "worker"); a controller process sends each worker its operations
 * over a pipe and does the cross-process checks.  All scenario mappings live at
 * HARNESS_BASE + page * 4096, mapped with MAP_FIXED_NOREPLACE, so the harness
 * never touches memory it did not map itself.
 *
 * Usage:  harness SCRIPT_FILE [TIMEOUT_S]     (the script read from a file)
 *         harness                            (a script baked in by `cowlab real emit`)
 *         harness --calibrate REPEATS        (timings for `cowlab real calibrate`)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
/* io_uring and uffd-wp are optional: built without their headers, the ops that need them
 * are skipped with that reason (old distributions on test VMs). */
#if defined(__has_include)
#if __has_include(<linux/io_uring.h>) && defined(__NR_io_uring_setup)
#include <linux/io_uring.h>
#define HAVE_IO_URING 1
#endif
#if __has_include(<linux/userfaultfd.h>) && defined(__NR_userfaultfd)
#include <linux/userfaultfd.h>
#endif
#endif
#if defined(UFFDIO_WRITEPROTECT) && defined(UFFD_FEATURE_PAGEFAULT_FLAG_WP)
#define HAVE_UFFD_WP 1
#endif
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HARNESS_VERSION 1
#define PAGE 4096UL
#define HARNESS_BASE 0x200000000000UL /* 32 TiB, 1 GiB aligned */
#define MAX_PAGE_NR ((0x7f0000000000UL - HARNESS_BASE) / PAGE)
#define MAX_MMS 64
#define MAX_NAMES 64
#define MAX_STEPS 4096
#define MAX_ARGS 260

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define PM_PFN(e) ((e) & ((1ULL << 55) - 1))
#define PM_SOFTDIRTY(e) (((e) >> 55) & 1)
#define PM_EXCL(e) (((e) >> 56) & 1)
#define PM_SWAP(e) (((e) >> 62) & 1)
#define PM_PRESENT(e) (((e) >> 63) & 1)

/* The script baked in by `cowlab real emit` (empty: read it from argv[1]). */
static const char *BAKED_SCRIPT =
/*@SCRIPT@*/ "";

/* ------------------------------------------------------------------------ */
/* the script                                                               */
/* ------------------------------------------------------------------------ */

struct step {
    int index;
    char op[16];
    int nargs;
    long args[MAX_ARGS];
    char reason[200];
};

static struct step *steps;
static int nsteps;
static int nmms, npipes, nrings;
static char script_hash[80] = "";
static char scenario_name[200] = "";
static long timeout_s = 120;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cowlab-harness: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void parse_script(const char *text) {
    steps = calloc(MAX_STEPS, sizeof(*steps));
    if (!steps) die("out of memory");
    const char *p = text;
    int line = 0;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char buf[8192];
        if (n >= sizeof(buf)) die("script line %d too long", line + 1);
        memcpy(buf, p, n);
        buf[n] = 0;
        line++;
        p = e ? e + 1 : p + n;
        if (!buf[0]) continue;
        char *reason = strstr(buf, " # ");
        if (reason) { *reason = 0; reason += 3; }
        char *tok = strtok(buf, " ");
        if (!tok) continue;
        if (!strcmp(tok, "cowlab-real-script")) continue;
        if (!strcmp(tok, "hash")) { tok = strtok(NULL, " "); if (tok) snprintf(script_hash, sizeof script_hash, "%s", tok); continue; }
        if (!strcmp(tok, "name")) { tok = strtok(NULL, " "); if (tok) snprintf(scenario_name, sizeof scenario_name, "%s", tok); continue; }
        if (!strcmp(tok, "mms")) { nmms = atoi(strtok(NULL, " ")); continue; }
        if (!strcmp(tok, "pipes")) { npipes = atoi(strtok(NULL, " ")); continue; }
        if (!strcmp(tok, "rings")) { nrings = atoi(strtok(NULL, " ")); continue; }
        if (!strcmp(tok, "timeout")) { timeout_s = atol(strtok(NULL, " ")); continue; }
        if (strcmp(tok, "S")) die("script line %d: unknown keyword '%s'", line, tok);
        if (nsteps >= MAX_STEPS) die("too many steps");
        struct step *s = &steps[nsteps++];
        tok = strtok(NULL, " ");
        if (!tok) die("script line %d: no step index", line);
        s->index = atoi(tok);
        tok = strtok(NULL, " ");
        if (!tok) die("script line %d: no op", line);
        snprintf(s->op, sizeof s->op, "%s", tok);
        while ((tok = strtok(NULL, " ")) != NULL) {
            if (s->nargs >= MAX_ARGS) die("script line %d: too many arguments", line);
            s->args[s->nargs++] = strtol(tok, NULL, 0);
        }
        if (reason) snprintf(s->reason, sizeof s->reason, "%s", reason);
    }
    if (nmms > MAX_MMS || npipes > MAX_NAMES || nrings > MAX_NAMES)
        die("script: too many mms or GUP names");
}

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */
/* ------------------------------------------------------------------------ */

static inline unsigned long addr_of(long page) { return HARNESS_BASE + (unsigned long)page * PAGE; }

static int pin_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}

static int pagemap_fd = -1;

static uint64_t pagemap_entry(unsigned long addr) {
    uint64_t e = 0;
    if (pagemap_fd < 0) pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
    if (pagemap_fd < 0) return 0;
    if (pread(pagemap_fd, &e, 8, (off_t)(addr / PAGE * 8)) != 8) return 0;
    return e;
}

static void reopen_pagemap(void) {
    if (pagemap_fd >= 0) close(pagemap_fd);
    pagemap_fd = -1;
}

static long faults_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt + ru.ru_majflt;
}

static long majflt_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_majflt;
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        p += r; n -= (size_t)r;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t n, int timeout_ms) {
    char *p = buf;
    while (n) {
        if (timeout_ms >= 0) {
            struct pollfd pfd = {fd, POLLIN, 0};
            int r = poll(&pfd, 1, timeout_ms);
            if (r == 0) return -2;
            if (r < 0) { if (errno == EINTR) continue; return -1; }
        }
        ssize_t r = read(fd, p, n);
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        if (r == 0) return -1;
        p += r; n -= (size_t)r;
    }
    return 0;
}

static int sysfs_read(const char *path, char *buf, size_t n) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0) return -1;
    buf[r] = 0;
    while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == ' ')) buf[--r] = 0;
    return 0;
}

static int sysfs_write(const char *path, const char *val) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    ssize_t r = write(fd, val, strlen(val));
    close(fd);
    return r < 0 ? -1 : 0;
}

/* The bracketed choice of a sysfs selector such as "always [madvise] never". */
static int sysfs_choice(const char *path, char *out, size_t n) {
    char buf[256];
    if (sysfs_read(path, buf, sizeof buf)) return -1;
    char *a = strchr(buf, '['), *b = a ? strchr(a, ']') : NULL;
    if (!a || !b) { snprintf(out, n, "%s", buf); return 0; }
    *b = 0;
    snprintf(out, n, "%s", a + 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* io_uring through raw system calls                                        */
/* ------------------------------------------------------------------------ */

#ifdef HAVE_IO_URING
struct ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

static int ring_setup(struct ring *r) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) return -errno;
    r->fd = fd;
    size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *sq = mmap(NULL, sqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                    IORING_OFF_SQ_RING);
    char *cq = mmap(NULL, cqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                    IORING_OFF_CQ_RING);
    void *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) return -errno;
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    r->sqes = sqes;
    return 0;
}

/* WRITE_FIXED: the kernel reads the registered (pinned) buffer into fd. */
static int ring_write_fixed(struct ring *r, int fd, unsigned long addr, unsigned len) {
    unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_WRITE_FIXED;
    sqe->fd = fd;
    sqe->addr = addr;
    sqe->len = len;
    sqe->off = 0;
    sqe->buf_index = 0;
    r->sq_array[idx] = idx;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    int n = (int)syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    if (n < 0) return -errno;
    unsigned head = __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
    if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) return -EAGAIN;
    int res = r->cqes[head & *r->cq_mask].res;
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    return res;
}

static long ring_register(int fd, struct iovec *iov) {
    return syscall(__NR_io_uring_register, fd, IORING_REGISTER_BUFFERS, iov, 1);
}

static long ring_unregister(int fd) {
    return syscall(__NR_io_uring_register, fd, IORING_UNREGISTER_BUFFERS, NULL, 0);
}
#else
struct ring { int fd; };
static int ring_setup(struct ring *r) { r->fd = -1; return -ENOSYS; }
static int ring_write_fixed(struct ring *r, int fd, unsigned long addr, unsigned len) {
    (void)r; (void)fd; (void)addr; (void)len;
    return -ENOSYS;
}
static long ring_register(int fd, struct iovec *iov) { (void)fd; (void)iov; errno = ENOSYS; return -1; }
static long ring_unregister(int fd) { (void)fd; errno = ENOSYS; return -1; }
#endif

/* ------------------------------------------------------------------------ */
/* workers: one process per mm                                              */
/* ------------------------------------------------------------------------ */

enum { W_MMAP = 1, W_MUNMAP, W_MREMAP, W_MPROTECT, W_MADVISE, W_READ, W_WRITE, W_FORK, W_EXIT,
       W_SOFTDIRTY, W_VMSPLICE, W_REGISTER, W_FINDPFN, W_PAGEMAP, W_MLOCK, W_MUNLOCK, W_UFFDWP };

struct cmd {
    int op, cpu;
    long a, b, c, d;
    uint64_t val;
};

struct reply {
    int status; /* 0 ok, else errno */
    int _pad;
    long faults, majflt;
    uint64_t pm_before, pm_after, extra, extra2;
    long found_page;
    long uffd_resolved;
    char msg[120];
};

static int cmd_r[MAX_MMS], cmd_w[MAX_MMS], rep_r[MAX_MMS], rep_w[MAX_MMS];
static int pipe_r[MAX_NAMES], pipe_w[MAX_NAMES];
static struct ring rings[MAX_NAMES];
static int ring_ok[MAX_NAMES];
static char ring_err[200];
static pid_t worker_pid[MAX_MMS];
static int worker_live[MAX_MMS];
static int my_mm = -1;
/* Bounding box of the pages this mm has mapped (inherited by a forked child). */
static long box_lo = -1, box_hi = -1;

/* Last PFN seen per page before a madvise that may swap it out (worker-local). */
#define LASTPFN_SLOTS 8192
static long lastpfn_page[LASTPFN_SLOTS];
static uint64_t lastpfn_val[LASTPFN_SLOTS];

static void lastpfn_put(long page, uint64_t pfn) {
    unsigned long h = (unsigned long)page * 2654435761UL % LASTPFN_SLOTS;
    for (int i = 0; i < LASTPFN_SLOTS; i++) {
        unsigned long j = (h + (unsigned long)i) % LASTPFN_SLOTS;
        if (lastpfn_page[j] == page + 1 || lastpfn_page[j] == 0) {
            lastpfn_page[j] = page + 1;
            lastpfn_val[j] = pfn;
            return;
        }
    }
}

static uint64_t lastpfn_get(long page) {
    unsigned long h = (unsigned long)page * 2654435761UL % LASTPFN_SLOTS;
    for (int i = 0; i < LASTPFN_SLOTS; i++) {
        unsigned long j = (h + (unsigned long)i) % LASTPFN_SLOTS;
        if (lastpfn_page[j] == page + 1) return lastpfn_val[j];
        if (lastpfn_page[j] == 0) return 0;
    }
    return 0;
}

static void box_add(long lo, long hi) {
    if (box_lo < 0 || lo < box_lo) box_lo = lo;
    if (hi > box_hi) box_hi = hi;
}

static void worker_loop(int mm);

static void worker_close_controller_ends(void) {
    for (int i = 0; i < nmms; i++) {
        if (cmd_w[i] >= 0) { close(cmd_w[i]); cmd_w[i] = -1; }
        if (rep_r[i] >= 0) { close(rep_r[i]); rep_r[i] = -1; }
    }
    for (int i = 0; i < npipes; i++) {
        /* the read ends stay with the controller only */
        if (pipe_r[i] >= 0) { close(pipe_r[i]); pipe_r[i] = -1; }
    }
}

static void reply_send(struct reply *r) {
    if (write_all(rep_w[my_mm], r, sizeof *r)) _exit(1);
}

/* userfaultfd write-protection: a monitor thread in the worker resolves every uffd-wp
 * fault by removing the protection of that page (what the simulator's monitor does). */
static int uffd = -1;
static volatile long uffd_resolved;

#ifdef HAVE_UFFD_WP
static void *uffd_monitor(void *arg) {
    (void)arg;
    for (;;) {
        struct pollfd pfd = {uffd, POLLIN, 0};
        if (poll(&pfd, 1, -1) < 0) continue;
        struct uffd_msg msg;
        if (read(uffd, &msg, sizeof msg) != (ssize_t)sizeof msg) continue;
        if (msg.event != UFFD_EVENT_PAGEFAULT || !(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP))
            continue;
        struct uffdio_writeprotect wp = {{msg.arg.pagefault.address & ~(PAGE - 1), PAGE}, 0};
        /* counted before the ioctl wakes the faulting store, so the store sees it */
        __atomic_add_fetch(&uffd_resolved, 1, __ATOMIC_SEQ_CST);
        ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
    }
    return NULL;
}

static int uffd_wp_range(unsigned long addr, size_t len, int enable, char *msg, size_t mlen) {
    if (uffd < 0) {
        uffd = (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (uffd < 0) { snprintf(msg, mlen, "userfaultfd: %s", strerror(errno)); return errno; }
        struct uffdio_api api = {UFFD_API, UFFD_FEATURE_PAGEFAULT_FLAG_WP, 0};
        if (ioctl(uffd, UFFDIO_API, &api)) { snprintf(msg, mlen, "UFFDIO_API(WP): %s", strerror(errno)); close(uffd); uffd = -1; return EOPNOTSUPP; }
        pthread_t th;
        if (pthread_create(&th, NULL, uffd_monitor, NULL)) { snprintf(msg, mlen, "pthread_create failed"); return EAGAIN; }
        pthread_detach(th);
    }
    struct uffdio_register reg = {{addr, len}, UFFDIO_REGISTER_MODE_WP, 0};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) { snprintf(msg, mlen, "UFFDIO_REGISTER(WP): %s", strerror(errno)); return errno; }
    struct uffdio_writeprotect wp = {{addr, len}, enable ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
    if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp)) { snprintf(msg, mlen, "UFFDIO_WRITEPROTECT: %s", strerror(errno)); return errno; }
    return 0;
}
#else
static int uffd_wp_range(unsigned long addr, size_t len, int enable, char *msg, size_t mlen) {
    (void)addr; (void)len; (void)enable;
    snprintf(msg, mlen, "the harness was built without userfaultfd write-protect headers");
    return ENOSYS;
}
#endif

static void do_worker_cmd(struct cmd *c) {
    struct reply r;
    memset(&r, 0, sizeof r);
    r.found_page = -1;
    unsigned long addr = addr_of(c->a);
    size_t len = (size_t)c->b * PAGE;
    if (c->cpu >= 0 && pin_cpu(c->cpu)) {
        r.status = errno;
        snprintf(r.msg, sizeof r.msg, "sched_setaffinity(cpu %d): %s", c->cpu, strerror(errno));
        reply_send(&r);
        return;
    }
    switch (c->op) {
    case W_MMAP: {
        int prot = (int)(c->c & 3), thp = (int)c->d, populate = (int)(c->val & 1);
        int huge = (int)(c->val >> 8); /* log2 of the hugetlb page size, 0: none */
        int p = (prot == 0 ? PROT_NONE : prot == 1 ? PROT_READ : PROT_READ | PROT_WRITE);
        int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
        if (huge) flags |= MAP_HUGETLB | (huge << MAP_HUGE_SHIFT);
        void *m = mmap((void *)addr, len, p, flags, -1, 0);
        if (m == MAP_FAILED) { r.status = errno; snprintf(r.msg, sizeof r.msg, "mmap: %s", strerror(errno)); break; }
        if (m != (void *)addr) { munmap(m, len); r.status = EEXIST; snprintf(r.msg, sizeof r.msg, "mmap: kernel ignored MAP_FIXED_NOREPLACE"); break; }
        box_add(c->a, c->a + c->b);
        if (!huge && madvise(m, len, thp < 0 ? MADV_NOHUGEPAGE : MADV_HUGEPAGE)) {
            r.status = errno; snprintf(r.msg, sizeof r.msg, "madvise(%s): %s", thp < 0 ? "NOHUGEPAGE" : "HUGEPAGE", strerror(errno)); break;
        }
        if (populate && prot) {
            if (madvise(m, len, prot == 3 ? MADV_POPULATE_WRITE : MADV_POPULATE_READ)) {
                if (errno != EINVAL) { r.status = errno; snprintf(r.msg, sizeof r.msg, "madvise(POPULATE): %s", strerror(errno)); break; }
                /* before v5.14: fault every page in by touching it */
                for (size_t off = 0; off < len; off += PAGE) {
                    if (prot == 3) *(volatile char *)((char *)m + off) = 0;
                    else (void)*(volatile char *)((char *)m + off);
                }
            }
        }
        break;
    }
    case W_MUNMAP:
        if (munmap((void *)addr, len)) { r.status = errno; snprintf(r.msg, sizeof r.msg, "munmap: %s", strerror(errno)); }
        break;
    case W_MREMAP: {
        unsigned long to = addr_of(c->c);
        /* the target must be free: never let MREMAP_FIXED replace a mapping */
        void *probe = mmap((void *)to, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (probe == MAP_FAILED || probe != (void *)to) {
            if (probe != MAP_FAILED) munmap(probe, len);
            r.status = EEXIST; snprintf(r.msg, sizeof r.msg, "mremap: target range not free"); break;
        }
        munmap(probe, len);
        void *m = mremap((void *)addr, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)to);
        if (m == MAP_FAILED) { r.status = errno; snprintf(r.msg, sizeof r.msg, "mremap: %s", strerror(errno)); break; }
        box_add(c->c, c->c + c->b);
        break;
    }
    case W_MPROTECT: {
        int prot = (int)c->c;
        int p = (prot == 0 ? PROT_NONE : prot == 1 ? PROT_READ : PROT_READ | PROT_WRITE);
        if (mprotect((void *)addr, len, p)) { r.status = errno; snprintf(r.msg, sizeof r.msg, "mprotect: %s", strerror(errno)); }
        break;
    }
    case W_MADVISE: {
        int adv = (int)c->c;
        if (adv == MADV_PAGEOUT || adv == MADV_COLD || adv == MADV_FREE) {
            for (long p = c->a; p < c->a + c->b; p++) {
                uint64_t e = pagemap_entry(addr_of(p));
                if (PM_PRESENT(e)) lastpfn_put(p, PM_PFN(e));
            }
        }
        if (madvise((void *)addr, len, adv)) { r.status = errno; snprintf(r.msg, sizeof r.msg, "madvise(%d): %s", adv, strerror(errno)); }
        break;
    }
    case W_MLOCK:
        if (mlock((void *)addr, len)) { r.status = errno; snprintf(r.msg, sizeof r.msg, "mlock: %s", strerror(errno)); }
        break;
    case W_MUNLOCK:
        if (munlock((void *)addr, len)) { r.status = errno; snprintf(r.msg, sizeof r.msg, "munlock: %s", strerror(errno)); }
        break;
    case W_READ: {
        volatile uint64_t *q = (volatile uint64_t *)addr;
        r.extra = *q;
        break;
    }
    case W_WRITE: {
        volatile uint64_t *q = (volatile uint64_t *)addr;
        r.pm_before = pagemap_entry(addr);
        if (!PM_PRESENT(r.pm_before) && PM_SWAP(r.pm_before)) r.extra2 = lastpfn_get(c->a);
        /* the word the page held (a load from a present page takes no fault) */
        if (PM_PRESENT(r.pm_before)) { r.extra = *q; r.found_page = 1; }
        long u0 = uffd_resolved;
        long f0 = faults_now(), m0 = majflt_now();
        *q = c->val;
        long f1 = faults_now(), m1 = majflt_now();
        r.uffd_resolved = __atomic_load_n(&uffd_resolved, __ATOMIC_SEQ_CST) - u0;
        r.pm_after = pagemap_entry(addr);
        r.faults = f1 - f0;
        r.majflt = m1 - m0;
        break;
    }
    case W_PAGEMAP:
        r.pm_before = pagemap_entry(addr);
        break;
    case W_UFFDWP:
        r.status = uffd_wp_range(addr, len, (int)c->c, r.msg, sizeof r.msg);
        break;
    case W_FINDPFN: {
        /* Look for PFN c->val among this mm's present pages (except page c->a when c->c):
         * a second mapping of the frame.  Reads the first 8 bytes there. */
        uint64_t want = c->val;
        if (box_lo < 0) break;
        static uint64_t buf[4096];
        for (long p = box_lo; p < box_hi; p += 4096) {
            long n = box_hi - p < 4096 ? box_hi - p : 4096;
            if (pagemap_fd < 0) pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
            ssize_t got = pread(pagemap_fd, buf, (size_t)n * 8, (off_t)(addr_of(p) / PAGE * 8));
            if (got < 0) { r.status = errno; break; }
            for (long i = 0; i < got / 8; i++) {
                if (!PM_PRESENT(buf[i]) || PM_PFN(buf[i]) != want) continue;
                if (c->c && p + i == c->a) continue;
                r.found_page = p + i;
                r.extra = *(volatile uint64_t *)addr_of(p + i);
                break;
            }
            if (r.found_page >= 0) break;
        }
        break;
    }
    case W_FORK: {
        int child = (int)c->c;
        pid_t pid = fork();
        if (pid < 0) { r.status = errno; snprintf(r.msg, sizeof r.msg, "fork: %s", strerror(errno)); break; }
        if (pid == 0) {
            reopen_pagemap();
            if (uffd >= 0) { close(uffd); uffd = -1; } /* no monitor thread in the child */
            my_mm = child;
            struct reply hello;
            memset(&hello, 0, sizeof hello);
            hello.extra = (uint64_t)getpid();
            reply_send(&hello);
            worker_loop(child);
            _exit(0);
        }
        r.extra = (uint64_t)pid;
        break;
    }
    case W_EXIT:
        reply_send(&r);
        _exit(0);
    case W_SOFTDIRTY: {
        int fd = open("/proc/self/clear_refs", O_WRONLY);
        if (fd < 0 || write(fd, "4", 1) != 1) { r.status = errno; snprintf(r.msg, sizeof r.msg, "clear_refs: %s", strerror(errno)); }
        if (fd >= 0) close(fd);
        break;
    }
    case W_VMSPLICE: {
        struct iovec iov = {(void *)addr, len};
        ssize_t n = vmsplice(pipe_w[c->c], &iov, 1, SPLICE_F_NONBLOCK);
        if (n < 0) { r.status = errno; snprintf(r.msg, sizeof r.msg, "vmsplice: %s", strerror(errno)); }
        else if ((size_t)n != len) { r.status = EAGAIN; snprintf(r.msg, sizeof r.msg, "vmsplice: took %zd of %zu bytes", n, len); }
        break;
    }
    case W_REGISTER: {
        struct iovec iov = {(void *)addr, len};
        long rc = ring_register(rings[c->c].fd, &iov);
        if (rc < 0) { r.status = errno; snprintf(r.msg, sizeof r.msg, "io_uring_register(BUFFERS): %s", strerror(errno)); }
        break;
    }
    default:
        r.status = EINVAL;
        snprintf(r.msg, sizeof r.msg, "unknown worker command %d", c->op);
    }
    reply_send(&r);
}

static void worker_loop(int mm) {
    my_mm = mm;
    for (;;) {
        struct cmd c;
        if (read_all(cmd_r[mm], &c, sizeof c, -1)) _exit(0); /* controller gone */
        do_worker_cmd(&c);
    }
}

/* ------------------------------------------------------------------------ */
/* the controller                                                           */
/* ------------------------------------------------------------------------ */

static volatile sig_atomic_t stopping;
static char ksm_saved[3][64];
static int ksm_changed;
static const char *KSM_KNOBS[3] = {"/sys/kernel/mm/ksm/run", "/sys/kernel/mm/ksm/pages_to_scan",
                                   "/sys/kernel/mm/ksm/sleep_millisecs"};

static void ksm_restore(void) {
    if (!ksm_changed) return;
    /* run first, so ksmd stops before its pace is restored */
    for (int i = 0; i < 3; i++) sysfs_write(KSM_KNOBS[i], ksm_saved[i]);
    ksm_changed = 0;
}

static void on_signal(int sig) {
    stopping = sig;
    ksm_restore();
    for (int i = 0; i < nmms; i++)
        if (worker_pid[i] > 0) kill(worker_pid[i], SIGKILL);
    const char *m = sig == SIGALRM ? "cowlab-harness: time limit reached, workers killed\n"
                                   : "cowlab-harness: interrupted, workers killed\n";
    (void)!write(2, m, strlen(m));
    _exit(sig == SIGALRM ? 3 : 130);
}

/* Wait until pid has exited, also when it is not our child (a forked mm's process is the
 * child of its parent's worker): its address space is torn down (exit_mm) before it
 * becomes a zombie, so a zombie or a vanished process has dropped every mapping. */
static int wait_gone(pid_t pid) {
    for (long waited = 0; waited < timeout_s * 1000000L; waited += 200) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return 0;
        if (kill(pid, 0) && errno == ESRCH) return 0;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        int fd = open(path, O_RDONLY);
        if (fd < 0) return 0;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            buf[n] = 0;
            char *rp = strrchr(buf, ')');
            if (rp && (rp[2] == 'Z' || rp[2] == 'X')) return 0;
        }
        usleep(200);
    }
    return -1;
}

static struct reply send_cmd(int mm, struct cmd *c) {
    struct reply r;
    memset(&r, 0, sizeof r);
    if (!worker_live[mm]) { r.status = ESRCH; snprintf(r.msg, sizeof r.msg, "mm %d has no process", mm); return r; }
    if (write_all(cmd_w[mm], c, sizeof *c)) { r.status = EPIPE; snprintf(r.msg, sizeof r.msg, "worker %d gone", mm); return r; }
    int rc = read_all(rep_r[mm], &r, sizeof r, (int)(timeout_s * 1000));
    if (rc) {
        memset(&r, 0, sizeof r);
        r.status = EPIPE;
        snprintf(r.msg, sizeof r.msg, rc == -2 ? "worker %d did not answer" : "worker %d died", mm);
    }
    return r;
}

/* JSON output */
static FILE *out;
static int first_step = 1, first_attempt = 1;
static char *attempts_buf;
static size_t attempts_len, attempts_cap;

static void attempts_printf(const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        size_t room = attempts_cap - attempts_len;
        int n = vsnprintf(attempts_buf ? attempts_buf + attempts_len : NULL, room, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < room) { attempts_len += (size_t)n; return; }
        attempts_cap = attempts_cap * 2 + (size_t)n + 4096;
        attempts_buf = realloc(attempts_buf, attempts_cap);
        if (!attempts_buf) die("out of memory");
    }
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 32) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static void step_status(struct step *s, const char *fmt, ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(out, "%s\n    {\"step\": %d, \"op\": ", first_step ? "" : ",", s->index);
    json_str(out, s->op);
    fprintf(out, ", \"status\": ");
    json_str(out, buf);
    fprintf(out, "}");
    first_step = 0;
}

/* GUP bookkeeping by name */
struct held {
    int held, mm;
    long page, pages;
};
static struct held pipes_held[MAX_NAMES], rings_held[MAX_NAMES];
static int tee_r = -1, tee_w = -1, memfd = -1;
static uint64_t zero_pfn;
static int host_cpus;
static cpu_set_t allowed_cpus;
static int have_swap;
static char swap_area[300] = "";
static uint64_t seq = 1;

static int cpu_usable(long cpu) { return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET((int)cpu, &allowed_cpus); }

/* The 8-byte words at the start of each page a pipe holds, without consuming it (tee). */
static long pipe_peek(int i, uint64_t *words, long maxn) {
    char page[PAGE];
    ssize_t n = tee(pipe_r[i], tee_w, (size_t)maxn * PAGE, SPLICE_F_NONBLOCK);
    if (n < 0) return -errno;
    long got = 0;
    ssize_t left = n;
    while (left > 0) {
        size_t want = left > (ssize_t)PAGE ? PAGE : (size_t)left;
        if (read_all(tee_r, page, want, 2000)) return -EIO;
        if (got < maxn) memcpy(&words[got], page, 8);
        got++;
        left -= (ssize_t)want;
    }
    return got;
}

static void pipe_drain(int i) {
    char page[PAGE];
    int fl = fcntl(pipe_r[i], F_GETFL);
    fcntl(pipe_r[i], F_SETFL, fl | O_NONBLOCK);
    while (read(pipe_r[i], page, PAGE) > 0) {}
    fcntl(pipe_r[i], F_SETFL, fl);
}

/* The words the device sees through a pinned (registered) buffer: WRITE_FIXED to a memfd. */
static long ring_peek(int i, uint64_t *words, long maxn) {
    struct held *h = &rings_held[i];
    long n = h->pages < maxn ? h->pages : maxn;
    int rc = ring_write_fixed(&rings[i], memfd, addr_of(h->page), (unsigned)(n * PAGE));
    if (rc < 0) return rc;
    if (rc != n * (long)PAGE) return -EIO;
    for (long j = 0; j < n; j++)
        if (pread(memfd, &words[j], 8, (off_t)(j * (long)PAGE)) != 8) return -EIO;
    return n;
}

#define OBS_MAX 1024
/* What the writer's own pipes and pins (taken by mm at page) read just before the store. */
struct own_view { int valid; uint64_t word; };
static struct own_view own_pipe[MAX_NAMES], own_ring[MAX_NAMES];
static long pipe_peek(int i, uint64_t *words, long maxn);
static long ring_peek(int i, uint64_t *words, long maxn);
static uint64_t peek_words[1024];

/* The two kinds of reference the harness holds, read back the same way: pipes that
 * vmsplice filled (GUP references) and io_uring fixed buffers (long-term pins). */
struct refkind {
    const char *label; /* how the observers list names one: "pipe 0 page 1" */
    struct held *held;
    const int *count;
    long (*peek)(int i, uint64_t *words, long maxn);
    struct own_view *own;
};
static const struct refkind refkinds[] = {
    {"pipe", pipes_held, &npipes, pipe_peek, own_pipe},
    {"pin", rings_held, &nrings, ring_peek, own_ring},
};
#define NREFKINDS ((int)(sizeof refkinds / sizeof refkinds[0]))

static void own_views_before(int mm, long page) {
    for (int k = 0; k < NREFKINDS; k++) {
        const struct refkind *rk = &refkinds[k];
        for (int i = 0; i < *rk->count; i++) {
            struct held *h = &rk->held[i];
            rk->own[i].valid = 0;
            if (!h->held || h->mm != mm || page < h->page || page >= h->page + h->pages) continue;
            long n = rk->peek(i, peek_words, 1024);
            if (n > page - h->page) { rk->own[i].valid = 1; rk->own[i].word = peek_words[page - h->page]; }
        }
    }
}

/* After mm's store of val at page: who sees it.  A leak is any other observer (another mm's
 * mapping, a second mapping in this mm, a pipe or pin taken elsewhere) that reads val.  A
 * pipe or pin this mm took at this very page is pin_incoherent when it read what the page
 * held just before the store (it was coherent: old_known, old) and does not read val now:
 * a reference made stale earlier (by an earlier copy, MADV_DONTNEED, munmap) is not this
 * store's doing.  An old word of 0 cannot tell the page from the zero page a stale
 * reference may hold, so then the store must also have moved the page to a new frame. */
static void check_observers(int mm, long page, uint64_t val, uint64_t pfn_after, int present_after,
                            int old_known, uint64_t old, int moved, char *violation,
                            char *observers, size_t olen) {
    int leak = 0, incoherent = 0;
    size_t used = 0;
    observers[0] = 0;
#define OBS(...) do { if (used < olen) used += (size_t)snprintf(observers + used, olen - used, __VA_ARGS__); } while (0)
    if (present_after) {
        for (int x = 0; x < nmms; x++) {
            if (!worker_live[x]) continue;
            struct cmd c = {W_FINDPFN, -1, page, 0, x == mm, 0, pfn_after};
            struct reply r = send_cmd(x, &c);
            if (r.status == 0 && r.found_page >= 0 && r.extra == val) {
                leak = 1;
                OBS("%s\"mapping of mm %d page %ld\"", used ? ", " : "", x, r.found_page);
            }
        }
    }
    static uint64_t words[OBS_MAX];
    for (int k = 0; k < NREFKINDS; k++) {
        const struct refkind *rk = &refkinds[k];
        for (int i = 0; i < *rk->count; i++) {
            struct held *h = &rk->held[i];
            if (!h->held) continue;
            long n = rk->peek(i, words, OBS_MAX);
            if (n < 0) { OBS("%s\"%s %d unreadable: %s\"", used ? ", " : "", rk->label, i, strerror((int)-n)); continue; }
            for (long j = 0; j < n && j < h->pages; j++) {
                int own = h->mm == mm && h->page + j == page;
                if (words[j] == val && !own) { leak = 1; OBS("%s\"%s %d page %ld\"", used ? ", " : "", rk->label, i, j); }
                if (own && words[j] != val) {
                    int was = old_known && rk->own[i].valid && rk->own[i].word == old
                              && (old != 0 || moved);
                    incoherent |= was;
                    OBS("%s\"%s %s %d page %ld\"", used ? ", " : "", was ? "stale" : "already stale", rk->label, i, j);
                }
            }
        }
    }
#undef OBS
    strcpy(violation, leak ? "\"leak\"" : incoherent ? "\"pin_incoherent\"" : "null");
}

/* Is pfn the shared zero page or the huge zero page?  /proc/kpageflags (root) has
 * KPF_ZERO_PAGE (bit 24) for both; without it only the 4 KiB zero page is known. */
static int kpageflags_fd = -2;
static int is_zero_pfn(uint64_t pfn) {
    if (pfn == zero_pfn) return 1;
    if (kpageflags_fd == -2) kpageflags_fd = open("/proc/kpageflags", O_RDONLY);
    uint64_t flags = 0;
    if (kpageflags_fd < 0 || pread(kpageflags_fd, &flags, 8, (off_t)(pfn * 8)) != 8) return 0;
    return (int)((flags >> 24) & 1);
}

static void record_write(struct step *s, int mm, long page, long cpu, uint64_t val,
                         struct reply *r) {
    uint64_t b = r->pm_before, a = r->pm_after;
    const char *fault, *outcome;
    const char *note = "";
    if (r->uffd_resolved > 0 && PM_PRESENT(b) && PM_PFN(a) == PM_PFN(b)) {
        /* The uffd-wp fault is retried after the monitor resolved it, and the retry is
         * counted whether it found the page writable or took a write fault. */
        fault = "unknown";
        outcome = "unknown";
        note = "resolved by the uffd-wp monitor; the retried fault cannot be told from no fault";
    } else if (r->faults == 0) { fault = "none"; outcome = "none"; }
    else if (!PM_PRESENT(b) && PM_SWAP(b)) {
        fault = "swap";
        if (r->majflt > 0) { outcome = "unknown"; note = "read from the swap device: a new frame either way"; }
        else if (!r->extra2) { outcome = "unknown"; note = "frame before the swap-out not recorded"; }
        else outcome = PM_PFN(a) == r->extra2 ? "reuse" : "copy";
    } else if (!PM_PRESENT(b)) { fault = "anon"; outcome = "none"; }
    else if (is_zero_pfn(PM_PFN(b))) { fault = "anon"; outcome = "none"; note = PM_PFN(b) == zero_pfn ? "zero page" : "huge zero page"; }
    else { fault = "wp"; outcome = PM_PFN(a) == PM_PFN(b) ? "reuse" : "copy"; }
    char violation[32], observers[1024];
    int moved = r->faults > 0 && PM_PRESENT(b) && PM_PRESENT(a) && PM_PFN(a) != PM_PFN(b);
    check_observers(mm, page, val, PM_PFN(a), (int)PM_PRESENT(a), r->found_page == 1, r->extra,
                    moved, violation, observers, sizeof observers);
    /* A violation belongs to the decision that caused it, as in the simulator: a store that
     * took no fault made no decision (it writes where an earlier fault let it), so what its
     * observers saw is listed but not counted again. */
    int seen = strcmp(violation, "null") != 0;
    if (r->faults == 0 && r->uffd_resolved == 0 && seen) {
        strcpy(violation, "null");
        note = "no fault, no decision: the observers still see this page (an earlier decision)";
    }
    attempts_printf("%s\n    {\"step\": %d, \"mm\": %d, \"page\": %ld, \"cpu\": %ld, "
                    "\"fault\": \"%s\", \"outcome\": \"%s\", \"violation\": %s, "
                    "\"faults\": %ld, \"majflt\": %ld, "
                    "\"present_before\": %d, \"swapped_before\": %d, \"pfn_before\": %llu, "
                    "\"excl_before\": %d, \"softdirty_before\": %d, "
                    "\"pfn_after\": %llu, \"excl_after\": %d, \"softdirty_after\": %d, "
                    "\"value\": %llu, \"observers\": [%s], \"note\": \"%s\"}",
                    first_attempt ? "" : ",", s->index, mm, page, cpu, fault, outcome, violation,
                    r->faults, r->majflt, (int)PM_PRESENT(b), (int)PM_SWAP(b),
                    (unsigned long long)(PM_PRESENT(b) ? PM_PFN(b) : 0), (int)PM_EXCL(b),
                    (int)PM_SOFTDIRTY(b), (unsigned long long)PM_PFN(a), (int)PM_EXCL(a),
                    (int)PM_SOFTDIRTY(a), (unsigned long long)val, observers, note);
    first_attempt = 0;
}

static void spawn_root_worker(int mm) {
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        alarm(0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        reopen_pagemap();
        worker_close_controller_ends();
        worker_loop(mm);
        _exit(0);
    }
    worker_pid[mm] = pid;
    worker_live[mm] = 1;
}

static int ksm_merge_step(struct step *s, char *msg, size_t mlen) {
    int n = (int)s->args[0];
    if (access(KSM_KNOBS[0], W_OK)) { snprintf(msg, mlen, "skipped: KSM not available (%s: %s)", KSM_KNOBS[0], strerror(errno)); return 1; }
    if (!ksm_changed) {
        for (int i = 0; i < 3; i++) if (sysfs_read(KSM_KNOBS[i], ksm_saved[i], sizeof ksm_saved[i])) { snprintf(msg, mlen, "skipped: cannot read %s", KSM_KNOBS[i]); return 1; }
        ksm_changed = 1;
    }
    sysfs_write(KSM_KNOBS[1], "10000");
    sysfs_write(KSM_KNOBS[2], "0");
    sysfs_write(KSM_KNOBS[0], "1");
    int merged = 0;
    for (int tries = 0; tries < 300 && !merged; tries++) {
        usleep(10000);
        uint64_t first = 0;
        merged = 1;
        for (int i = 0; i < n; i++) {
            int mm = (int)s->args[1 + 2 * i];
            long page = s->args[2 + 2 * i];
            struct cmd c = {W_PAGEMAP, -1, page, 1, 0, 0, 0};
            struct reply r = send_cmd(mm, &c);
            uint64_t pfn = PM_PRESENT(r.pm_before) ? PM_PFN(r.pm_before) : 0;
            if (i == 0) first = pfn;
            if (!pfn || pfn != first) merged = 0;
        }
    }
    ksm_restore();
    if (!merged) { snprintf(msg, mlen, "skipped: ksmd did not merge the %d pages within 3 s", n); return 1; }
    snprintf(msg, mlen, "ok");
    return 0;
}

static void drain_on(int cpu, void *scratch) {
    pin_cpu(cpu);
    madvise(scratch, PAGE, MADV_COLD); /* MADV_COLD starts with lru_add_drain() */
}

static int run_script(void) {
    out = stdout;
    struct utsname u;
    uname(&u);
    if (sched_getaffinity(0, sizeof allowed_cpus, &allowed_cpus)) CPU_ZERO(&allowed_cpus);
    host_cpus = CPU_COUNT(&allowed_cpus);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGALRM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)timeout_s);

    /* the shared zero page's PFN: read an untouched page of a scratch mapping */
    char *scratch = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scratch == MAP_FAILED) die("mmap scratch: %s", strerror(errno));
    madvise(scratch, 2 * PAGE, MADV_NOHUGEPAGE);
    (void)*(volatile char *)scratch;
    zero_pfn = PM_PFN(pagemap_entry((unsigned long)scratch));
    scratch[PAGE] = 1; /* the drain page */
    int pfn_visible = zero_pfn != 0;
    /* soft-dirty tracking exists only if a freshly written page is marked soft-dirty */
    int have_softdirty = (int)PM_SOFTDIRTY(pagemap_entry((unsigned long)scratch + PAGE));

    {
        FILE *f = fopen("/proc/swaps", "r");
        char line[512];
        if (f) {
            int nl = 0;
            while (fgets(line, sizeof line, f)) {
                if (nl++ == 1) { line[strcspn(line, "\n")] = 0; snprintf(swap_area, sizeof swap_area, "%s", line); }
            }
            fclose(f);
            have_swap = nl > 1;
        }
    }
    for (int i = 0; i < nmms; i++) {
        int a[2], b[2];
        if (pipe(a) || pipe(b)) die("pipe: %s", strerror(errno));
        cmd_r[i] = a[0]; cmd_w[i] = a[1]; rep_r[i] = b[0]; rep_w[i] = b[1];
    }
    for (int i = 0; i < npipes; i++) {
        int a[2];
        if (pipe(a)) die("pipe: %s", strerror(errno));
        pipe_r[i] = a[0]; pipe_w[i] = a[1];
    }
    if (npipes) {
        int a[2];
        if (pipe(a)) die("pipe: %s", strerror(errno));
        tee_r = a[0]; tee_w = a[1];
    }
    for (int i = 0; i < nrings; i++) {
        int rc = ring_setup(&rings[i]);
        ring_ok[i] = rc == 0;
        if (rc == -ENOSYS) snprintf(ring_err, sizeof ring_err, "the harness was built without <linux/io_uring.h>");
        else if (rc) snprintf(ring_err, sizeof ring_err, "io_uring_setup: %s", strerror(-rc));
    }
    if (nrings) {
        memfd = (int)syscall(__NR_memfd_create, "cowlab-pin-view", 0);
        if (memfd < 0) die("memfd_create: %s", strerror(errno));
    }

    fprintf(out, "{\n  \"format\": \"cowlab-real-result\",\n  \"version\": %d,\n", HARNESS_VERSION);
    fprintf(out, "  \"script_hash\": ");
    json_str(out, script_hash);
    fprintf(out, ",\n  \"scenario\": ");
    json_str(out, scenario_name);
    fprintf(out, ",\n  \"uname\": {\"sysname\": ");
    json_str(out, u.sysname);
    fprintf(out, ", \"release\": ");
    json_str(out, u.release);
    fprintf(out, ", \"version\": ");
    json_str(out, u.version);
    fprintf(out, ", \"machine\": ");
    json_str(out, u.machine);
    fprintf(out, "},\n  \"host\": {\"cpus\": %d, \"swap\": %s, \"pfn_visible\": %s, \"uid\": %d",
            host_cpus, have_swap ? "true" : "false", pfn_visible ? "true" : "false", (int)getuid());
    fprintf(out, ", \"soft_dirty\": %s", have_softdirty ? "true" : "false");
    fprintf(out, ", \"swap_area\": ");
    json_str(out, swap_area);
    const char *knobs[] = {"/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/mm/ksm/run"};
    for (int i = 0; i < 2; i++) {
        char v[64] = "unavailable";
        sysfs_choice(knobs[i], v, sizeof v);
        fprintf(out, ", ");
        json_str(out, i == 0 ? "thp_enabled" : "ksm_run");
        fprintf(out, ": ");
        json_str(out, v);
    }
    fprintf(out, "},\n  \"steps\": [");
    fflush(out);

    for (int si = 0; si < nsteps; si++) {
        struct step *s = &steps[si];
        long *a = s->args;
        char msg[300];
        if (!strcmp(s->op, "skip")) { step_status(s, "skipped: %s", s->reason); continue; }
        if (!pfn_visible) { step_status(s, "skipped: pagemap hides PFNs (needs CAP_SYS_ADMIN)"); continue; }
        struct cmd c;
        memset(&c, 0, sizeof c);
        c.cpu = -1;
        struct reply r;
        int mm = (int)a[0];
#define NEED_CPU(cpuval) if (!cpu_usable(cpuval)) { step_status(s, "skipped: cpu %ld is not available to the harness (host has %d)", (long)(cpuval), host_cpus); continue; }
#define NEED_PAGES(pg, n) if ((pg) + (n) > (long)MAX_PAGE_NR) { step_status(s, "skipped: pages above %lu do not fit the harness's address window", MAX_PAGE_NR); continue; }
#define SIMPLE(OPC, A, B, C2, CPU) do { c.op = OPC; c.a = A; c.b = B; c.c = C2; c.cpu = CPU; r = send_cmd(mm, &c); \
            if (r.status) step_status(s, "error: %s", r.msg); else step_status(s, "ok"); } while (0)
        if (!strcmp(s->op, "mmap")) {
            /* mm page pages prot thp populate cpu */
            NEED_CPU(a[6]); NEED_PAGES(a[1], a[2]);
            long thp = a[4];
            if (thp >= 0) {
                char path[128], v[64];
                if (thp == 9) snprintf(path, sizeof path, "/sys/kernel/mm/transparent_hugepage/enabled");
                else snprintf(path, sizeof path, "/sys/kernel/mm/transparent_hugepage/hugepages-%lukB/enabled", (PAGE >> 10) << thp);
                if (sysfs_choice(path, v, sizeof v)) { step_status(s, "skipped: %s is missing (no %s THP on this kernel)", path, thp == 9 ? "PMD" : "mTHP"); continue; }
                if (!strcmp(v, "inherit")) sysfs_choice("/sys/kernel/mm/transparent_hugepage/enabled", v, sizeof v);
                if (strcmp(v, "madvise") && strcmp(v, "always")) { step_status(s, "skipped: %s is '%s'; it must be madvise or always (cowlab real run sets it)", path, v); continue; }
            }
            long huge = s->nargs > 7 ? a[7] : 0;
            if (huge) {
                char path[128], v[64];
                snprintf(path, sizeof path, "/sys/kernel/mm/hugepages/hugepages-%lukB/free_hugepages", (1UL << huge) >> 10);
                long need = a[2] / (long)((1UL << huge) / PAGE);
                if (sysfs_read(path, v, sizeof v)) { step_status(s, "skipped: %s is missing (no hugetlb pages of that size)", path); continue; }
                if (atol(v) < need) { step_status(s, "skipped: %ld free hugetlb pages of %lu kB, %ld needed (vm.nr_hugepages; cowlab real run reserves them)", atol(v), (1UL << huge) >> 10, need); continue; }
            }
            if (!worker_live[mm]) {
                if (worker_pid[mm]) { step_status(s, "error: mm %d has exited", mm); continue; }
                spawn_root_worker(mm);
            }
            c.op = W_MMAP; c.a = a[1]; c.b = a[2]; c.c = a[3]; c.d = thp; c.val = (uint64_t)a[5] | ((uint64_t)huge << 8); c.cpu = (int)a[6];
            r = send_cmd(mm, &c);
            if (r.status) step_status(s, "error: %s", r.msg); else step_status(s, "ok");
        } else if (!strcmp(s->op, "munmap")) {
            SIMPLE(W_MUNMAP, a[1], a[2], 0, -1);
        } else if (!strcmp(s->op, "mremap")) {
            NEED_PAGES(a[3], a[2]);
            SIMPLE(W_MREMAP, a[1], a[2], a[3], -1);
        } else if (!strcmp(s->op, "mprotect")) {
            SIMPLE(W_MPROTECT, a[1], a[2], a[3], -1);
        } else if (!strcmp(s->op, "madvise")) {
            NEED_CPU(a[4]);
            if ((a[3] == MADV_PAGEOUT) && !have_swap) { step_status(s, "skipped: no swap is enabled, MADV_PAGEOUT cannot swap anonymous pages (use --swapfile SIZE)"); continue; }
            SIMPLE(W_MADVISE, a[1], a[2], a[3], (int)a[4]);
        } else if (!strcmp(s->op, "mlock")) {
            NEED_CPU(a[3]);
            SIMPLE(W_MLOCK, a[1], a[2], 0, (int)a[3]);
        } else if (!strcmp(s->op, "munlock")) {
            SIMPLE(W_MUNLOCK, a[1], a[2], 0, -1);
        } else if (!strcmp(s->op, "read")) {
            NEED_CPU(a[3]);
            int bad = 0;
            for (long p = a[1]; p < a[1] + a[2] && !bad; p++) {
                c.op = W_READ; c.a = p; c.cpu = (int)a[3];
                r = send_cmd(mm, &c);
                if (r.status) { step_status(s, "error: %s", r.msg); bad = 1; }
            }
            if (!bad) step_status(s, "ok");
        } else if (!strcmp(s->op, "write")) {
            /* mm page pages cpu hasdata data */
            NEED_CPU(a[3]);
            int bad = 0;
            for (long p = a[1]; p < a[1] + a[2] && !bad; p++) {
                uint64_t val = a[4] ? (uint64_t)a[5] : (0xC0DE000000000000ULL | seq++);
                own_views_before(mm, p);
                c.op = W_WRITE; c.a = p; c.cpu = (int)a[3]; c.val = val;
                r = send_cmd(mm, &c);
                if (r.status) { step_status(s, "error: %s", r.msg); bad = 1; break; }
                record_write(s, mm, p, a[3], val, &r);
            }
            if (!bad) step_status(s, "ok");
        } else if (!strcmp(s->op, "fork")) {
            /* mm child cpu */
            NEED_CPU(a[2]);
            int child = (int)a[1];
            c.op = W_FORK; c.c = child; c.cpu = (int)a[2];
            r = send_cmd(mm, &c);
            if (r.status) { step_status(s, "error: %s", r.msg); continue; }
            struct reply hello;
            if (read_all(rep_r[child], &hello, sizeof hello, (int)(timeout_s * 1000))) { step_status(s, "error: the child did not report"); continue; }
            worker_pid[child] = (pid_t)hello.extra;
            worker_live[child] = 1;
            step_status(s, "ok");
        } else if (!strcmp(s->op, "exit")) {
            c.op = W_EXIT;
            r = send_cmd(mm, &c);
            int gone = wait_gone(worker_pid[mm]);
            worker_live[mm] = 0;
            step_status(s, r.status ? "error: exit" : gone ? "error: the process did not exit in time" : "ok");
        } else if (!strcmp(s->op, "uffdwp")) {
            /* mm page pages enable */
            c.op = W_UFFDWP; c.a = a[1]; c.b = a[2]; c.c = a[3];
            r = send_cmd(mm, &c);
            if (r.status) step_status(s, "skipped: %s", r.msg); else step_status(s, "ok");
        } else if (!strcmp(s->op, "softdirty")) {
            if (!have_softdirty) { step_status(s, "skipped: this kernel has no soft-dirty tracking (a freshly written page is not soft-dirty in pagemap: CONFIG_MEM_SOFT_DIRTY is off), so clear_refs 4 write-protects nothing"); continue; }
            SIMPLE(W_SOFTDIRTY, 0, 0, 0, -1);
        } else if (!strcmp(s->op, "gupget")) {
            /* mm page pages name cpu */
            NEED_CPU(a[4]);
            int i = (int)a[3];
            if (a[2] > OBS_MAX) { step_status(s, "skipped: vmsplice of more than %d pages", OBS_MAX); continue; }
            {
                /* the pipe (and the tee pipe that peeks into it) must hold every page */
                int want = (int)(a[2] * (long)PAGE) < 65536 ? 65536 : (int)(a[2] * (long)PAGE);
                if (fcntl(pipe_w[i], F_SETPIPE_SZ, want) < 0 || fcntl(tee_w, F_SETPIPE_SZ, want) < 0) {
                    char mx[32] = "?";
                    sysfs_read("/proc/sys/fs/pipe-max-size", mx, sizeof mx);
                    step_status(s, "skipped: a pipe of %d bytes is refused (%s; fs.pipe-max-size is %s)", want, strerror(errno), mx);
                    continue;
                }
            }
            c.op = W_VMSPLICE; c.a = a[1]; c.b = a[2]; c.c = i; c.cpu = (int)a[4];
            r = send_cmd(mm, &c);
            if (r.status) { step_status(s, "error: %s", r.msg); continue; }
            pipes_held[i] = (struct held){1, mm, a[1], a[2]};
            step_status(s, "ok");
        } else if (!strcmp(s->op, "gupring")) {
            NEED_CPU(a[4]);
            int i = (int)a[3];
            if (!ring_ok[i]) { step_status(s, "skipped: io_uring unavailable (%s)", ring_err); continue; }
            if (a[2] > OBS_MAX) { step_status(s, "skipped: a pin of more than %d pages", OBS_MAX); continue; }
            c.op = W_REGISTER; c.a = a[1]; c.b = a[2]; c.c = i; c.cpu = (int)a[4];
            r = send_cmd(mm, &c);
            if (r.status) { step_status(s, "skipped: %s", r.msg); continue; }
            rings_held[i] = (struct held){1, mm, a[1], a[2]};
            step_status(s, "ok");
        } else if (!strcmp(s->op, "put")) {
            /* kind name */
            int i = (int)a[1];
            if (a[0] == 0) { pipe_drain(i); pipes_held[i].held = 0; step_status(s, "ok"); }
            else if (!rings_held[i].held) { step_status(s, "skipped: the pin was not taken"); }
            else {
                long rc = ring_unregister(rings[i].fd);
                rings_held[i].held = 0;
                if (rc < 0) step_status(s, "error: io_uring_register(UNREGISTER_BUFFERS): %s", strerror(errno));
                else step_status(s, "ok");
            }
        } else if (!strcmp(s->op, "ksm")) {
            ksm_merge_step(s, msg, sizeof msg);
            step_status(s, "%s", msg);
        } else if (!strcmp(s->op, "drain")) {
            cpu_set_t saved;
            sched_getaffinity(0, sizeof saved, &saved);
            if (a[0] < 0) { for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) if (CPU_ISSET(cpu, &allowed_cpus)) drain_on(cpu, scratch + PAGE); }
            else { NEED_CPU(a[0]); drain_on((int)a[0], scratch + PAGE); }
            sched_setaffinity(0, sizeof saved, &saved);
            step_status(s, "ok");
        } else if (!strcmp(s->op, "sleep")) {
            usleep((useconds_t)a[0]);
            step_status(s, "ok");
        } else {
            step_status(s, "skipped: the harness does not know op '%s'", s->op);
        }
    }
    ksm_restore();
    fprintf(out, "\n  ],\n  \"attempts\": [");
    if (attempts_buf) fwrite(attempts_buf, 1, attempts_len, out);
    fprintf(out, "\n  ]\n}\n");
    fflush(out);
    for (int i = 0; i < nmms; i++) {
        if (!worker_live[i]) continue;
        struct cmd c = {W_EXIT, -1, 0, 0, 0, 0, 0};
        send_cmd(i, &c);
        worker_live[i] = 0;
    }
    for (int i = 0; i < npipes; i++) pipe_drain(i);
    alarm(0);
    while (wait(NULL) > 0) {}
    return 0;
}

/* ------------------------------------------------------------------------ */
/* calibration                                                              */
/* ------------------------------------------------------------------------ */

static inline long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int cmp_long(const void *x, const void *y) {
    long a = *(const long *)x, b = *(const long *)y;
    return (a > b) - (a < b);
}

static long median(long *v, int n) {
    if (n <= 0) return -1;
    qsort(v, (size_t)n, sizeof *v, cmp_long);
    return v[n / 2];
}

static volatile int spin_stop;
static void *spinner(void *arg) {
    pin_cpu((int)(long)arg);
    while (!spin_stop) __atomic_signal_fence(__ATOMIC_SEQ_CST);
    return NULL;
}

static void print_stat(const char *name, long *v, int n, int tried, const char *what) {
    long med = median(v, n);
    printf("%s  \"%s\": {\"median_ns\": %ld, \"samples\": %d, \"attempted\": %d, \"what\": ",
           strcmp(name, "reuse_fault") ? ",\n" : "", name, med, n, tried);
    json_str(stdout, what);
    printf("}");
}

static int calibrate(int reps) {
    if (reps < 10) reps = 10;
    pin_cpu(0);
    long *v = calloc((size_t)reps, sizeof *v);
    size_t len = (size_t)reps * PAGE;
    struct utsname u;
    uname(&u);
    printf("{\n  \"format\": \"cowlab-real-calibration\",\n  \"kernel\": ");
    json_str(stdout, u.release);
    printf(",\n  \"machine\": ");
    json_str(stdout, u.machine);
    printf(",\n  \"timings\": {\n");
    char *m;
    int n;
    /* 1. reuse write fault: after fork() and the child's exit the pages are mapped
     * read-only and no longer marked exclusive; the parent's write reuses each one. */
    m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(m, len, MADV_NOHUGEPAGE);
    for (int i = 0; i < reps; i++) m[(size_t)i * PAGE] = 1;
    {
        pid_t c = fork();
        if (c == 0) _exit(0);
        waitpid(c, NULL, 0);
    }
    n = 0;
    for (int i = 0; i < reps; i++) {
        char *p = m + (size_t)i * PAGE;
        uint64_t b = pagemap_entry((unsigned long)p);
        long f0 = faults_now(), t0 = now_ns();
        *(volatile char *)p = 2;
        long t1 = now_ns(), f1 = faults_now();
        if (f1 - f0 == 1 && PM_PFN(pagemap_entry((unsigned long)p)) == PM_PFN(b)) v[n++] = t1 - t0;
    }
    print_stat("reuse_fault", v, n, reps, "write fault on a page left read-only by fork() after the child exited: reused by the refcount check (wp_page_reuse)");
    munmap(m, len);
    /* 2. copy write fault: a live child shares every page; the parent's write copies. */
    m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(m, len, MADV_NOHUGEPAGE);
    for (int i = 0; i < reps; i++) m[(size_t)i * PAGE] = 1;
    int go[2];
    if (pipe(go)) die("pipe");
    pid_t pid = fork();
    if (pid == 0) { char ch; close(go[1]); (void)!read(go[0], &ch, 1); _exit(0); }
    close(go[0]);
    n = 0;
    for (int i = 0; i < reps; i++) {
        char *p = m + (size_t)i * PAGE;
        uint64_t b = pagemap_entry((unsigned long)p);
        long f0 = faults_now(), t0 = now_ns();
        *(volatile char *)p = 2;
        long t1 = now_ns(), f1 = faults_now();
        if (f1 - f0 == 1 && PM_PFN(pagemap_entry((unsigned long)p)) != PM_PFN(b)) v[n++] = t1 - t0;
    }
    close(go[1]);
    waitpid(pid, NULL, 0);
    print_stat("copy_fault", v, n, reps, "write fault on a page shared with a live forked child: wp_page_copy, local TLB flush only");
    munmap(m, len);
    /* 3. swap-in: page out, let write-back finish, map back, page out again (now clean:
     * freed), then the timed write reads the page from the swap device. */
    int swap_ok = 0;
    { FILE *f = fopen("/proc/swaps", "r"); char line[512]; int nl = 0; if (f) { while (fgets(line, sizeof line, f)) nl++; fclose(f); } swap_ok = nl > 1; }
    n = 0;
    int minor_n = 0;
    long *vm = calloc((size_t)reps, sizeof *vm);
    if (swap_ok) {
        m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        madvise(m, len, MADV_NOHUGEPAGE);
        for (int i = 0; i < reps; i++) m[(size_t)i * PAGE] = 1;
        madvise(m, len, MADV_PAGEOUT);
        usleep(500000);
        for (int i = 0; i < reps; i++) (void)*(volatile char *)(m + (size_t)i * PAGE);
        madvise(m, len, MADV_PAGEOUT);
        usleep(100000);
        for (int i = 0; i < reps; i++) {
            char *p = m + (size_t)i * PAGE;
            uint64_t b = pagemap_entry((unsigned long)p);
            if (!PM_SWAP(b)) continue;
            long f0 = majflt_now(), g0 = faults_now(), t0 = now_ns();
            *(volatile char *)p = 2;
            long t1 = now_ns(), f1 = majflt_now(), g1 = faults_now();
            if (f1 - f0 == 1 && g1 - g0 == 1) v[n++] = t1 - t0;
            else if (g1 - g0 == 1) vm[minor_n++] = t1 - t0;
        }
        munmap(m, len);
    }
    print_stat("swapin_major_fault", v, n, reps, swap_ok ? "write fault on a swapped-out page read back from the swap device (major fault)" : "no swap enabled: not measured");
    print_stat("swapin_cache_fault", vm, minor_n, reps, "write fault on a swapped-out page still in the swapcache (minor fault)");
    /* 4. LRU drain: MADV_COLD starts with lru_add_drain(); time it with a full per-CPU
     * batch (fresh pages just faulted) and with an empty one. */
    char *cold = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cold[0] = 1;
    m = mmap(NULL, 32 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(m, 32 * PAGE, MADV_NOHUGEPAGE);
    long *ve = calloc((size_t)reps, sizeof *ve);
    int ne = 0;
    n = 0;
    for (int i = 0; i < reps; i++) {
        madvise(m, 32 * PAGE, MADV_DONTNEED);
        madvise(cold, PAGE, MADV_COLD);
        long t0 = now_ns();
        madvise(cold, PAGE, MADV_COLD);
        ve[ne++] = now_ns() - t0;
        for (int j = 0; j < 31; j++) m[(size_t)j * PAGE] = 1; /* 31 new folios in the batch */
        t0 = now_ns();
        madvise(cold, PAGE, MADV_COLD);
        v[n++] = now_ns() - t0;
    }
    munmap(m, 32 * PAGE);
    print_stat("madv_cold_full_batch", v, n, reps, "madvise(MADV_COLD) of one page right after 31 first-touch faults: lru_add_drain() of a full batch plus the call");
    print_stat("madv_cold_empty_batch", ve, ne, reps, "madvise(MADV_COLD) of one page with the batch already drained: the call alone");
    /* 5. TLB-flushing mprotect: a thread of this process spins on CPU 1, so write-protecting
     * a present dirty page needs a remote shootdown; compare with no second thread. */
    m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    m[0] = 1;
    n = 0;
    for (int i = 0; i < reps; i++) {
        mprotect(m, PAGE, PROT_READ | PROT_WRITE);
        m[0] = 1;
        long t0 = now_ns();
        mprotect(m, PAGE, PROT_READ);
        v[n++] = now_ns() - t0;
    }
    print_stat("mprotect_local", v, n, reps, "mprotect(PROT_READ) of one dirty page, single-threaded process: local flush");
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    n = 0;
    int remote_cpu = -1;
    {
        cpu_set_t all;
        CPU_ZERO(&all);
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) CPU_SET(cpu, &all);
        sched_setaffinity(0, sizeof all, &all);
        cpu_set_t av;
        sched_getaffinity(0, sizeof av, &av);
        for (int cpu = 1; cpu < CPU_SETSIZE; cpu++) if (CPU_ISSET(cpu, &av)) { remote_cpu = cpu; break; }
        pin_cpu(0);
    }
    if (remote_cpu > 0) {
        pthread_t th;
        spin_stop = 0;
        pthread_create(&th, NULL, spinner, (void *)(long)remote_cpu);
        usleep(20000);
        for (int i = 0; i < reps; i++) {
            mprotect(m, PAGE, PROT_READ | PROT_WRITE);
            m[0] = 1;
            long t0 = now_ns();
            mprotect(m, PAGE, PROT_READ);
            v[n++] = now_ns() - t0;
        }
        spin_stop = 1;
        pthread_join(th, NULL);
    }
    print_stat("mprotect_remote", v, n, reps, "the same with a second thread spinning on another CPU: one remote TLB shootdown (IPI) per call");
    munmap(m, PAGE);
    printf("\n  }\n}\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--calibrate")) return calibrate(atoi(argv[2]));
    const char *text = BAKED_SCRIPT;
    if (!text[0]) {
        if (argc < 2) die("usage: %s SCRIPT_FILE [TIMEOUT_S] | --calibrate REPEATS", argv[0]);
        FILE *f = fopen(argv[1], "r");
        if (!f) die("%s: %s", argv[1], strerror(errno));
        size_t cap = 1 << 20, n = 0;
        char *buf = malloc(cap);
        size_t r;
        while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
            n += r;
            if (n + 1 >= cap) { cap *= 2; buf = realloc(buf, cap); }
        }
        buf[n] = 0;
        fclose(f);
        text = buf;
        if (argc >= 3) timeout_s = atol(argv[2]);
    }
    parse_script(text);
    if (argc >= 2 && BAKED_SCRIPT[0]) timeout_s = atol(argv[1]);
    return run_script();
}
