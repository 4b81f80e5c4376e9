// What Sigma's start-up kernel switch does (docs/architecture.md, "How the BLAS kernel set is chosen"), in C: clear
// OpenBLAS's `gotoblas` table pointer, set OPENBLAS_CORETYPE=Cooperlake, run gotoblas_dynamic_init(), then check 20
// products against a double-precision reference. `switch` switches at once; `switch 1 w` first runs one product on
// OpenBLAS's threads (so they have started), then switches on one BLAS thread — as Sigma does. Run many at once
// with run.sh to see the race with OpenBLAS's starting threads. Needs a DYNAMIC_ARCH OpenBLAS and an AVX-512 BF16 CPU.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cblas.h>
extern char *openblas_get_corename(void);
extern void openblas_set_num_threads(int);
static unsigned long long s = 67;
static float rnd(void) { s += 0x9E3779B97F4A7C15ULL; unsigned long long z = s; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL; z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL; z ^= z >> 31; return (float)(z >> 40) * 0x1p-24f * 2 - 1; }
int check(int m, int k, int n, int ta, int tb) {
  float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n), *c = malloc(sizeof(float) * m * n);
  for (int i = 0; i < m * k; i++) a[i] = rnd();
  for (int i = 0; i < k * n; i++) b[i] = rnd();
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1, a, ta ? m : k, b, tb ? k : n, 0, c, n);
  int bad = 0;
  for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) {
    double r = 0; for (int p = 0; p < k; p++) r += (double)(ta ? a[p * m + i] : a[i * k + p]) * (double)(tb ? b[j * k + p] : b[p * n + j]);
    double e = fabs(c[i * n + j] - r) / fmax(1, fabs(r));
    if (!(e <= 1e-5)) bad++;
  }
  free(a); free(b); free(c);
  return bad;
}
int main(int argc, char **argv) {
  void *h = dlopen(NULL, RTLD_NOW);
  void **slot = dlsym(h, "gotoblas"); void (*init)(void) = dlsym(h, "gotoblas_dynamic_init");
  if (!slot || !init) { printf("no dynamic\n"); return 2; }
  char before[64]; strncpy(before, openblas_get_corename(), 63);
  if (argc > 2) { /* warm-up: a product big enough for OpenBLAS's threads, so they have started */
    int n = 128, k = 64; float *a = calloc(n * k, 4), *c = calloc(n * n, 4);   /* as Sigma: (n × k) · its transpose */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, k, 1, a, k, a, k, 0, c, n);
    free(a); free(c);
  }
  if (argc > 1 && atoi(argv[1]) == 1) openblas_set_num_threads(1);
  *slot = NULL; setenv("OPENBLAS_CORETYPE", "Cooperlake", 1); init(); unsetenv("OPENBLAS_CORETYPE");
  int shapes[5][3] = {{67,129,33},{96,200,80},{1,300,7},{7,300,1},{5,3,2}};
  int bad = 0;
  for (int q = 0; q < 5; q++) for (int t = 0; t < 4; t++) bad += check(shapes[q][0], shapes[q][1], shapes[q][2], t & 1, t >> 1);
  printf("%s -> %s bad %d\n", before, openblas_get_corename(), bad);
  return bad ? 1 : 0;
}
