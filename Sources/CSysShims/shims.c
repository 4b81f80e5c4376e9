#define _GNU_SOURCE
#include "CSysShims.h"
#include <sys/eventfd.h>
#include <pthread.h>
#include <unistd.h>
#include <stdint.h>

int csys_eventfd_nonblock(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
int csys_eventfd_signal(int fd) { uint64_t one = 1; return write(fd, &one, sizeof one) == sizeof one ? 0 : -1; }
void csys_eventfd_drain(int fd) { uint64_t v; while (read(fd, &v, sizeof v) == sizeof v) {} }
void csys_set_thread_name(const char *name) {
    char buf[16]; int i = 0;
    for (; name[i] && i < 15; i++) buf[i] = name[i];
    buf[i] = 0;
    pthread_setname_np(pthread_self(), buf);
}
uint64_t csys_physical_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    return (pages > 0 && size > 0) ? (uint64_t)pages * (uint64_t)size : 0;
}
#include <malloc.h>
void csys_tune_heap(int mmap_threshold, int trim_threshold) {
    mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    mallopt(M_TRIM_THRESHOLD, trim_threshold);
    /* One arena: a thread arena's heap is at most 64 MiB, so larger blocks allocated off the main thread
       (tensor payloads on compute and ZeroMQ threads) would bypass it and be fresh, zero-filled mmaps. */
    mallopt(M_ARENA_MAX, 1);
}
void csys_release_free_memory(void) { malloc_trim(0); }

uint64_t csys_atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
void csys_atomic_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
uint64_t csys_atomic_add_u64(uint64_t *p, uint64_t delta) { return __atomic_add_fetch(p, delta, __ATOMIC_SEQ_CST); }
uint64_t csys_atomic_or_u64(uint64_t *p, uint64_t bits) { return __atomic_or_fetch(p, bits, __ATOMIC_SEQ_CST); }
uint64_t csys_atomic_and_u64(uint64_t *p, uint64_t bits) { return __atomic_and_fetch(p, bits, __ATOMIC_SEQ_CST); }
int csys_atomic_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Every Sigma process tunes its heap before main and before any thread exists: a thread that allocated
   before `mallopt(M_ARENA_MAX, 1)` keeps its own arena, whose 64 MiB heaps cannot hold a large tensor or
   payload, so those would be fresh zero-filled mmaps (page faults) on every step. */
__attribute__((constructor)) static void csys_tune_heap_at_load(void) {
    csys_tune_heap(512 << 20, 1 << 30);
}

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>
int csys_tun_create(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = errno; close(fd); return -e; }
    return fd;
}

#include <link.h>
#include <string.h>

struct csys_build_id_search { unsigned char *out; int cap; int found; };

static int csys_build_id_visit(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct csys_build_id_search *s = data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *n = (const ElfW(Nhdr) *)p;
            const unsigned char *name = p + sizeof(ElfW(Nhdr));
            const unsigned char *desc = name + ((n->n_namesz + 3) & ~3u);
            if (desc + n->n_descsz > end) break;
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && memcmp(name, "GNU", 4) == 0) {
                if ((int)n->n_descsz <= s->cap) { memcpy(s->out, desc, n->n_descsz); s->found = (int)n->n_descsz; }
                return 1;
            }
            p = desc + ((n->n_descsz + 3) & ~3u);
        }
    }
    return 1;   // (the first object visited is the executable itself: stop there)
}

int csys_build_id(unsigned char *out, int cap) {
    struct csys_build_id_search s = { out, cap, 0 };
    dl_iterate_phdr(csys_build_id_visit, &s);
    return s.found;
}

#include <semaphore.h>
#include <stdlib.h>
#include <time.h>
struct csys_wake { uint64_t ticket; uint64_t sleeping; sem_t sem; };
csys_wake *csys_wake_new(void) {
    csys_wake *w = calloc(1, sizeof *w);
    if (w) sem_init(&w->sem, 0, 0);
    return w;
}
uint64_t csys_wake_ticket(csys_wake *w) { return __atomic_load_n(&w->ticket, __ATOMIC_SEQ_CST); }
static inline void csys_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
static long long csys_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}
uint64_t csys_wake_wait(csys_wake *w, uint64_t seen, long spin_ns) {
    long long deadline = csys_now_ns() + spin_ns;
    for (unsigned i = 1;; i++) {
        uint64_t t = __atomic_load_n(&w->ticket, __ATOMIC_SEQ_CST);
        if (t != seen) return t;
        if ((i & 127) == 0 && csys_now_ns() >= deadline) break;
        csys_relax();
    }
    for (;;) {
        /* Say we sleep, then look again: a signaller advances the ticket and then reads `sleeping`, so one of the
           two sees the other (sequentially consistent), and no wake-up is lost. A post left over from a look that
           found the ticket moved only makes a later sleep return early: the loop looks again. */
        __atomic_store_n(&w->sleeping, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&w->ticket, __ATOMIC_SEQ_CST) == seen) while (sem_wait(&w->sem) != 0) {}
        __atomic_store_n(&w->sleeping, 0, __ATOMIC_SEQ_CST);
        uint64_t t = __atomic_load_n(&w->ticket, __ATOMIC_SEQ_CST);
        if (t != seen) return t;
    }
}
void csys_wake_signal(csys_wake *w) {
    __atomic_add_fetch(&w->ticket, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&w->sleeping, __ATOMIC_SEQ_CST)) sem_post(&w->sem);
}
