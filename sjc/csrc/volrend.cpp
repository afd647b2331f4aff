// Fused CPU volume rendering of the voxel field: one pass per ray over the dense renderer's samples,
// trilinear density and colour, alpha compositing, the emptiness regulariser, early termination, and
// the exact backward pass. The maths is sjc/render.py's dense_render_rays and sjc/regularizers.py's
// emptiness_loss; this only removes the per-sample tensor traffic.
//
// Layouts: density (N^3) indexed [z][y][x]; appearance channels-last (N^3, C), so the C values of a
// corner are one contiguous read. The forward pass records each evaluated sample (index along the ray,
// raw density, exp(-τ), transmittance before it) so the backward pass does not march again.
// Samples are handled in blocks of 16 along a ray: locating them on the grid, the trilinear density and the
// transcendental functions run as vector loops (with -march=native, AVX-512 gathers where the CPU has them);
// only the compositing, which is sequential along the ray, runs one sample at a time.
#include <torch/extension.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

// With glibc's vector maths library (SJC_LIBMVEC: x86-64, glibc >= 2.35), declaring these SIMD-callable
// lets the compiler run the block loops below 4 samples per call.
#ifdef SJC_LIBMVEC
extern "C" {
__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) float log1pf(float);
}
#define SJC_EXP expf
#define SJC_LOG1P log1pf
#else
#define SJC_EXP std::exp
#define SJC_LOG1P std::log1p
#endif

namespace {

constexpr int64_t kRayChunk = 16;   // rays per OpenMP work item (static, so results do not depend on timing)

inline float sigmoid(float v) { return 1.f / (1.f + std::exp(-v)); }

constexpr int kBlock = 16;   // samples located and looked up together, in loops the compiler vectorises

// Flat offsets of the 8 trilinear corners of a cell from its first corner, on an N^3 grid indexed [z][y][x]:
// corner q = 4a + 2b + e is base + a·N² + b·N + e.
struct Corners {
  int32_t off[8];
  explicit Corners(int64_t n) {
    for (int q = 0; q < 8; ++q) off[q] = int32_t((q >> 2) * n * n + ((q >> 1) & 1) * n + (q & 1));
  }
};

// A block of samples along one ray, at distances t[k], located on an N^3 grid on [-1, 1]^3
// (align_corners=True) as structure-of-arrays in one vector loop: each sample's nearest voxel (the cell the
// occupancy test reads), its trilinear cell's first corner and the 8 corner weights.
struct Block {
  int32_t cell[kBlock], base[kBlock];
  float w[8][kBlock];

  void locate(const float* ro, const float* rd, const float* t, int64_t n) {
    const float s = 0.5f * (n - 1), hi = float(n - 1);
    const int32_t m = int32_t(n);
#pragma omp simd
    for (int k = 0; k < kBlock; ++k) {
      const float x = std::min(std::max((ro[0] + t[k] * rd[0] + 1.f) * s, 0.f), hi);
      const float y = std::min(std::max((ro[1] + t[k] * rd[1] + 1.f) * s, 0.f), hi);
      const float z = std::min(std::max((ro[2] + t[k] * rd[2] + 1.f) * s, 0.f), hi);
      const int32_t x0 = std::min(int32_t(x), m - 2), y0 = std::min(int32_t(y), m - 2), z0 = std::min(int32_t(z), m - 2);
      cell[k] = (int32_t(z + 0.5f) * m + int32_t(y + 0.5f)) * m + int32_t(x + 0.5f);
      base[k] = (z0 * m + y0) * m + x0;
      const float fx = x - x0, fy = y - y0, fz = z - z0;
      const float gx[2] = {1.f - fx, fx}, gy[2] = {1.f - fy, fy}, gz[2] = {1.f - fz, fz};
      for (int q = 0; q < 8; ++q) w[q][k] = gz[q >> 2] * gy[(q >> 1) & 1] * gx[q & 1];
    }
  }

  // Trilinear interpolation of a scalar grid at every sample of the block (8 gathers per lane).
  void interpolate(const float* g, const Corners& c, float* out) const {
#pragma omp simd
    for (int k = 0; k < kBlock; ++k) {
      float v = 0.f;
      for (int q = 0; q < 8; ++q) v += w[q][k] * g[base[k] + c.off[q]];
      out[k] = v;
    }
  }
};

// The transcendental functions of a block of samples, in loops the compiler can vectorise (see SJC_EXP).

// e = exp(−softplus(y)·step): each sample's transmittance factor (softplus(y) = y above 20, as in torch).
inline void transmittance_factors(const float* y, float* e, float step) {
#pragma omp simd
  for (int k = 0; k < kBlock; ++k) {
    const float a = SJC_EXP(std::min(y[k], 20.f));
    const float sp = y[k] > 20.f ? y[k] : SJC_LOG1P(a);
    e[k] = SJC_EXP(-sp * step);
  }
}

// sigmoid(y), the derivative of softplus, for a block.
inline void sigmoids(const float* y, float* out) {
#pragma omp simd
  for (int k = 0; k < kBlock; ++k) out[k] = 1.f / (1.f + SJC_EXP(-std::max(y[k], -80.f)));
}

// A sample's record, written by the forward pass for the backward one.
struct Record {
  float i, raw, e, trans;   // index along the ray, raw density, exp(-τ), transmittance before the sample
};
static_assert(sizeof(Record) == 4 * sizeof(float), "records are stored in a (R, S, 4) float tensor");

struct Params {
  const float *o, *d, *t_near, *raw, *app;
  const int64_t* n_in;
  const bool* occ;
  int64_t n, C;
  float ds_exp, shift, step, thr, t_min, emp_scale;
  bool pixel_space;
};

// Activated colour of the channels at sample k of a block into `col`.
// NC > 0 fixes the channel count at compile time (unrolled loops); NC = 0 reads it from p.C.
template <int NC>
inline void colour(const Params& p, const Corners& c, const Block& b, int k, float* col) {
  const int64_t C = NC > 0 ? NC : p.C;
  for (int64_t ch = 0; ch < C; ++ch) col[ch] = 0.f;
  for (int q = 0; q < 8; ++q) {
    const float* a = p.app + int64_t(b.base[k] + c.off[q]) * C;
    for (int64_t ch = 0; ch < C; ++ch) col[ch] += b.w[q][k] * a[ch];
  }
  if (p.pixel_space)
    for (int64_t ch = 0; ch < C; ++ch) col[ch] = 2.f * sigmoid(col[ch]) - 1.f;
}

constexpr int kMaxC = 16;

// Run f with the channel count as a compile-time constant for the common cases (3: RGB, 4: SD latents).
template <class F>
inline void dispatch_channels(int64_t C, F&& f) {
  if (C == 3) f(std::integral_constant<int, 3>{});
  else if (C == 4) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 0>{});
}

}  // namespace

// Returns rgb (R, C), opacity (R), Σ w·t (R), Σ log(1 + s·w) (R), samples evaluated (R), and what the
// backward pass reads (empty when `save` is false): the records (R, S, 4) and the kept samples' colours (R, S, C).
std::vector<torch::Tensor> forward(torch::Tensor o, torch::Tensor d, torch::Tensor t_near, torch::Tensor n_in,
                                   torch::Tensor raw, torch::Tensor app, torch::Tensor occ, double ds_exp,
                                   double shift, double step, double thr, double t_min, bool pixel_space,
                                   double emp_scale, int64_t max_samples, bool save) {
  const int64_t R = o.size(0), n = raw.size(-1), C = app.size(-1);
  TORCH_CHECK(C <= kMaxC, "the fused renderer supports at most 16 channels");
  TORCH_CHECK(n >= 2 && n <= 1290, "the fused renderer supports grids of 2 to 1290 voxels per side (int32 indices)");
  auto rgb = torch::zeros({R, C}, o.options());
  auto opacity = torch::zeros({R}, o.options());
  auto depth = torch::zeros({R}, o.options());
  auto emptiness = torch::zeros({R}, o.options());
  auto count = torch::zeros({R}, n_in.options());
  auto records = torch::empty({save ? R : 0, max_samples, 4}, o.options());
  auto colours = torch::empty({save ? R : 0, max_samples, C}, o.options());   // activated colour of kept samples
  const Params p{o.data_ptr<float>(), d.data_ptr<float>(), t_near.data_ptr<float>(), raw.data_ptr<float>(),
                 app.data_ptr<float>(), n_in.data_ptr<int64_t>(), occ.numel() ? occ.data_ptr<bool>() : nullptr,
                 n, C, float(ds_exp), float(shift), float(step), float(thr), float(t_min), float(emp_scale),
                 pixel_space};
  float *prgb = rgb.data_ptr<float>(), *pop = opacity.data_ptr<float>(), *pdep = depth.data_ptr<float>(),
        *pemp = emptiness.data_ptr<float>();
  Record* prec = save ? reinterpret_cast<Record*>(records.data_ptr<float>()) : nullptr;
  float* pcol = save ? colours.data_ptr<float>() : nullptr;
  int64_t* pc = count.data_ptr<int64_t>();
  const Corners corners(n);
  const auto rays = [&](auto nc) {
    constexpr int NC = decltype(nc)::value;
    const int64_t nch = NC > 0 ? NC : C;   // a compile-time constant for 3 and 4 channels
#pragma omp parallel for schedule(static, kRayChunk) num_threads(at::get_num_threads())
    for (int64_t r = 0; r < R; ++r) {
      const float *ro = p.o + 3 * r, *rd = p.d + 3 * r;
      float trans = 1.f, op = 0.f, dep = 0.f, col[kMaxC], acc[kMaxC] = {0.f};
      // Σ log(1 + s·w) as the log of a running product (one log per ray instead of one per sample);
      // the product is folded into the sum before it could overflow.
      double emp = 0.0, prod = 1.0;
      int64_t m = 0;
      bool stop = false;
      for (int64_t i0 = 0; i0 < p.n_in[r] && !stop; i0 += kBlock) {
        // Lookups for the whole block as vector loops (lanes past the ray's end are clamped into the grid and
        // ignored), then the transcendental functions, then the compositing in order over the occupied samples.
        const int nb = int(std::min<int64_t>(kBlock, p.n_in[r] - i0));
        Block blk;
        float tb[kBlock], rv[kBlock], y[kBlock], eb[kBlock];
#pragma omp simd
        for (int k = 0; k < kBlock; ++k) tb[k] = p.t_near[r] + (float(int32_t(i0) + k) + 0.5f) * p.step;
        blk.locate(ro, rd, tb, n);
        if (trans > p.thr)   // colour may be looked up: start fetching the samples' appearance corners
          for (int k = 0; k < nb; ++k)
            for (int q = 0; q < 8; q += 2) __builtin_prefetch(p.app + int64_t(blk.base[k] + corners.off[q]) * nch);
        blk.interpolate(p.raw, corners, rv);
#pragma omp simd
        for (int k = 0; k < kBlock; ++k) y[k] = rv[k] * p.ds_exp + p.shift;
        transmittance_factors(y, eb, p.step);
        for (int k = 0; k < nb; ++k) {   // compositing, in order
          if (p.occ && !p.occ[blk.cell[k]]) continue;   // an empty cell: density ≤ the occupancy threshold
          const int64_t i = i0 + k;
          const float t = tb[k], e = eb[k];
          const float w = (1.f - e) * trans;
          if (prec) prec[r * max_samples + m] = {float(i), rv[k], e, trans};
          op += w;
          dep += w * t;
          prod *= 1.0 + double(p.emp_scale) * w;
          if (prod > 1e30) {
            emp += std::log(prod);
            prod = 1.0;
          }
          if (w > p.thr) {
            colour<NC>(p, corners, blk, k, col);
            for (int64_t c = 0; c < nch; ++c) acc[c] += w * col[c];
            if (pcol)
              for (int64_t c = 0; c < nch; ++c) pcol[(r * max_samples + m) * nch + c] = col[c];
          }
          ++m;
          trans *= e;
          if (trans < p.t_min) {
            stop = true;
            break;
          }
        }
      }
      for (int64_t c = 0; c < nch; ++c) prgb[r * nch + c] = acc[c];
      pop[r] = op;
      pdep[r] = dep;
      pemp[r] = float(emp + std::log(prod));
      pc[r] = m;
    }
  };
  dispatch_channels(C, rays);
  return {rgb, opacity, depth, emptiness, count, records, colours};
}

// Gradients of (rgb, opacity, Σ w·t, Σ log(1 + s·w)) → (density raw (N^3), appearance raw (N^3, C), d_scale);
// without `geometry` only the appearance's (the density's and d_scale's come back empty and zero).
// Each thread accumulates into its own grids (static ray split), summed in thread order: deterministic.
std::vector<torch::Tensor> backward(torch::Tensor g_rgb, torch::Tensor g_op, torch::Tensor g_dep,
                                    torch::Tensor g_emp, torch::Tensor o, torch::Tensor d, torch::Tensor t_near,
                                    torch::Tensor count, torch::Tensor records, torch::Tensor colours, int64_t n,
                                    int64_t C, double ds_exp, double shift, double step, double thr,
                                    bool pixel_space, double emp_scale, bool geometry) {
  const int64_t R = o.size(0), n3 = n * n * n, S = records.size(1);
  const int nt = at::get_num_threads();
  // Thread 0 accumulates into the returned grids, the others into their own, added in thread order. Each
  // thread zeroes its own grids (in parallel, and first touched by the thread that uses them).
  const int64_t n3g = geometry ? n3 : 0;   // the density gradient's cells
  auto g_raw = torch::empty({n3g}, o.options()), g_app = torch::empty({n3 * C}, o.options());
  auto g_raw_more = torch::empty({nt - 1, n3g}, o.options()), g_app_more = torch::empty({nt - 1, n3 * C}, o.options());
  int team = 1;   // the threads OpenMP actually gave the region (at most nt)
  auto g_ds = torch::zeros({nt}, torch::dtype(torch::kFloat64));
  const Params p{o.data_ptr<float>(), d.data_ptr<float>(), t_near.data_ptr<float>(), nullptr, nullptr, nullptr,
                 nullptr, n, C, float(ds_exp), float(shift), float(step), float(thr), 0.f, float(emp_scale),
                 pixel_space};
  const float *pgr = g_rgb.data_ptr<float>(), *pgo = g_op.data_ptr<float>(), *pgd = g_dep.data_ptr<float>(),
              *pge = g_emp.data_ptr<float>();
  const Record* prec = reinterpret_cast<const Record*>(records.data_ptr<float>());
  const float* pcol = colours.data_ptr<float>();
  const int64_t* pc = count.data_ptr<int64_t>();
  double* pgds = g_ds.data_ptr<double>();
  const Corners corners(n);
  const auto rays = [&](auto nc) {
    constexpr int NC = decltype(nc)::value;
    const int64_t nch = NC > 0 ? NC : C;   // a compile-time constant for 3 and 4 channels
#pragma omp parallel num_threads(nt)
    {
      const int tid = omp_get_thread_num();
      float* graw = tid ? g_raw_more.data_ptr<float>() + (tid - 1) * n3g : g_raw.data_ptr<float>();
      float* gapp = tid ? g_app_more.data_ptr<float>() + (tid - 1) * n3 * C : g_app.data_ptr<float>();
      if (tid == 0) team = omp_get_num_threads();
      std::fill(graw, graw + n3g, 0.f);
      std::fill(gapp, gapp + n3 * C, 0.f);
      double gds = 0.0;
#pragma omp for schedule(static, kRayChunk)
      for (int64_t r = 0; r < R; ++r) {
        const float *ro = p.o + 3 * r, *rd = p.d + 3 * r, *gr = pgr + r * nch;
        float suffix = 0.f;   // Σ_{later samples} ∂L/∂w · w
        for (int64_t j1 = pc[r]; j1 > 0; j1 -= kBlock) {   // blocks of records, last block first
          const int64_t j0 = std::max<int64_t>(j1 - kBlock, 0);
          // Per block, as vector loops: each record's distance, weight w and the part of ∂L/∂w that does not
          // involve colour (opacity, depth, emptiness), the softplus derivative, and the trilinear corners.
          const int nb = int(j1 - j0);
          if (j0 > 0) {   // the records are read back to front, which the hardware prefetcher follows poorly
            const int64_t jp = std::max<int64_t>(j0 - kBlock, 0);
            for (int64_t b = 0; b < int64_t(kBlock * sizeof(Record)); b += 64)
              __builtin_prefetch(reinterpret_cast<const char*>(prec + r * S + jp) + b);
            for (int64_t b = 0; b < int64_t(kBlock * nch * sizeof(float)); b += 64)
              __builtin_prefetch(reinterpret_cast<const char*>(pcol + (r * S + jp) * nch) + b);
          }
          float y[kBlock] = {0.f}, sg[kBlock], tb[kBlock] = {0.f}, eb[kBlock] = {0.f}, trb[kBlock] = {0.f},
                rawb[kBlock], wb[kBlock], gb[kBlock];
          for (int k = 0; k < nb; ++k) {
            const Record& q = prec[r * S + j0 + k];
            rawb[k] = q.raw;
            y[k] = q.raw * p.ds_exp + p.shift;
            tb[k] = p.t_near[r] + (q.i + 0.5f) * p.step;
            eb[k] = q.e;
            trb[k] = q.trans;
          }
#pragma omp simd
          for (int k = 0; k < kBlock; ++k) wb[k] = (1.f - eb[k]) * trb[k];
          if (geometry) {   // the softplus derivative and the colour-free part of ∂L/∂w: the density's gradient only
            sigmoids(y, sg);
            const float go = pgo[r], gd = pgd[r], ge = pge[r] * p.emp_scale;
#pragma omp simd
            for (int k = 0; k < kBlock; ++k) gb[k] = go + gd * tb[k] + ge / (1.f + p.emp_scale * wb[k]);
          }
          Block blk;
          blk.locate(ro, rd, tb, n);
          for (int k = nb - 1; k >= 0; --k) {   // in reverse order along the ray
            const float w = wb[k];
            float g = geometry ? gb[k] : 0.f;   // ∂L/∂w
            if (w > p.thr) {
              const float* col = pcol + (r * S + j0 + k) * nch;
              float ga[kMaxC];
              for (int64_t c = 0; c < nch; ++c) {
                g += gr[c] * col[c];
                // ∂L/∂(appearance raw) at the sample; pixel space: d(2·sigmoid − 1) = 2·sg·(1 − sg), sg = (col + 1) / 2
                const float act = p.pixel_space ? 0.5f * (1.f + col[c]) * (1.f - col[c]) : 1.f;
                ga[c] = gr[c] * w * act;
              }
              for (int q = 0; q < 8; ++q) {
                float* a = gapp + int64_t(blk.base[k] + corners.off[q]) * nch;
                for (int64_t c = 0; c < nch; ++c) a[c] += ga[c] * blk.w[q][k];
              }
            }
            if (!geometry) continue;
            const float dtau = g * trb[k] * eb[k] - suffix;
            suffix += g * w;
            const float dy = dtau * p.step * sg[k];
            const float dr = dy * p.ds_exp;
            for (int q = 0; q < 8; ++q) graw[blk.base[k] + corners.off[q]] += dr * blk.w[q][k];
            gds += double(dy) * rawb[k] * p.ds_exp;
          }
        }
      }
      pgds[tid] = gds;
    }
  };
  dispatch_channels(C, rays);
  if (team > 1) {   // add the other threads' grids, in thread order, in parallel over cells
    float *a = g_raw.data_ptr<float>(), *b = g_app.data_ptr<float>();
    const float *am = g_raw_more.data_ptr<float>(), *bm = g_app_more.data_ptr<float>();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t k = 0; k < n3g; ++k)
      for (int t = 1; t < team; ++t) a[k] += am[(t - 1) * n3g + k];
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t k = 0; k < n3 * C; ++k)
      for (int t = 1; t < team; ++t) b[k] += bm[(t - 1) * n3 * C + k];
  }
  return {g_raw, g_app.view({n3, C}), g_ds.sum().to(torch::kFloat32)};
}

void adamax_step(torch::Tensor param, torch::Tensor grad, torch::Tensor exp_avg, torch::Tensor exp_inf, double beta1,
                 double beta2, double eps, double step_size);   // adamax.cpp, built into the same module

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused volume rendering, forward");
  m.def("backward", &backward, "fused volume rendering, backward");
  m.def("adamax_step", &adamax_step, "Adamax's update of one parameter in one pass");
}
