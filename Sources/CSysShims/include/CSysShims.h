#pragma once
#include <stdint.h>
/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); returns -1 on error.
int csys_eventfd_nonblock(void);
/// Writes 1 to the eventfd (wakes a poller). Returns 0 on success.
int csys_eventfd_signal(int fd);
/// Reads and clears the eventfd counter (non-blocking).
void csys_eventfd_drain(int fd);
/// Names the calling thread (at most 15 characters are kept).
void csys_set_thread_name(const char *name);
/// Total physical memory in bytes.
uint64_t csys_physical_memory(void);
/// Keeps freed blocks up to `mmap_threshold` bytes in the heap (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD).
void csys_tune_heap(int mmap_threshold, int trim_threshold);
/// Gives the heap's free pages back to the system (malloc_trim(0)): after a large block was freed, which the
/// tuned heap would otherwise keep.
void csys_release_free_memory(void);
/// Atomic load/store (sequentially consistent) of a 64-bit word, also across processes sharing the memory.
uint64_t csys_atomic_load_u64(const uint64_t *p);
void csys_atomic_store_u64(uint64_t *p, uint64_t v);
/// Atomically adds `delta` (two's complement: subtracts too) and returns the new value.
uint64_t csys_atomic_add_u64(uint64_t *p, uint64_t delta);
/// Atomic OR / AND of a 64-bit word; return the new value.
uint64_t csys_atomic_or_u64(uint64_t *p, uint64_t bits);
uint64_t csys_atomic_and_u64(uint64_t *p, uint64_t bits);
/// Creates a TUN device (IFF_TUN | IFF_NO_PI) named `name`, attached to the returned non-blocking descriptor;
/// the device goes away when the descriptor is closed. Returns -errno on failure. (Used by the emulated-hosts
/// test's delay line, where the kernel has no `netem`.)
int csys_tun_create(const char *name);
/// GELU, erf form: y = x/2 · (1 + erf(x/√2)), erf by Abramowitz & Stegun 7.1.26 with a vectorisable e^x
/// (within 1e-6 of the scalar definition; the engine's tests check it).
void csys_gelu(const float *x, float *y, long n);
/// Softmax over each of `rows` rows of `cols` values: e^(x − max) / Σ, with the same vectorisable e^x.
void csys_softmax_rows(const float *x, float *y, long rows, long cols);
/// The running executable's GNU build id (the linker's NT_GNU_BUILD_ID note), copied into `out`: its length in
/// bytes, or 0 when the executable carries none (or it does not fit `cap`).
int csys_build_id(unsigned char *out, int cap);
/// A wake-up word one thread waits on and another signals: a ticket the signaller advances, with a semaphore for a
/// waiter that has stopped spinning. Made once, never freed (the engine's helper threads live as long as the process).
typedef struct csys_wake csys_wake;
csys_wake *csys_wake_new(void);
/// The ticket now.
uint64_t csys_wake_ticket(csys_wake *w);
/// Waits until the ticket differs from `seen` — spinning (with the CPU's pause hint) for up to `spin_ns`, then
/// asleep — and returns it.
uint64_t csys_wake_wait(csys_wake *w, uint64_t seen, long spin_ns);
/// Advances the ticket; wakes the waiter if it sleeps.
void csys_wake_signal(csys_wake *w);
/// Sets *p to `desired` if it holds `expected`; returns whether it did (sequentially consistent).
int csys_atomic_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired);
