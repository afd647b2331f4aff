// Fused CPU volume rendering of the voxel field: one pass per ray over the dense renderer's samples,
// trilinear density and colour, alpha compositing, early termination, and the exact backward pass.
// The maths is sjc/render.py's dense_render_rays; this only removes the per-sample tensor traffic.
#include <torch/extension.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct Trilinear {
  int64_t idx[8];
  float w[8];
};

// Corners and weights of a world point in [-1, 1]^3 on an N^3 grid indexed [z][y][x] (align_corners=True).
inline Trilinear corners(float px, float py, float pz, int64_t n) {
  const float s = 0.5f * (n - 1);
  float x = std::min(std::max((px + 1.f) * s, 0.f), float(n - 1));
  float y = std::min(std::max((py + 1.f) * s, 0.f), float(n - 1));
  float z = std::min(std::max((pz + 1.f) * s, 0.f), float(n - 1));
  int64_t x0 = std::min<int64_t>(int64_t(x), n - 2), y0 = std::min<int64_t>(int64_t(y), n - 2),
          z0 = std::min<int64_t>(int64_t(z), n - 2);
  float fx = x - x0, fy = y - y0, fz = z - z0;
  Trilinear t;
  int k = 0;
  for (int dz = 0; dz < 2; ++dz)
    for (int dy = 0; dy < 2; ++dy)
      for (int dx = 0; dx < 2; ++dx, ++k) {
        t.idx[k] = ((z0 + dz) * n + (y0 + dy)) * n + (x0 + dx);
        t.w[k] = (dz ? fz : 1.f - fz) * (dy ? fy : 1.f - fy) * (dx ? fx : 1.f - fx);
      }
  return t;
}

inline float softplus(float v) { return v > 20.f ? v : std::log1p(std::exp(v)); }
inline float sigmoid(float v) { return 1.f / (1.f + std::exp(-v)); }

struct Sample {
  Trilinear tri;
  float t, raw, e, trans, w;   // e = exp(-τ), the sample's transmittance factor
  bool kept;
};

// March one ray: fills `s` with its evaluated samples (in order) until the transmittance drops below `t_min`.
inline void march(const float* o, const float* d, float t_near, int64_t n_in, const float* raw, const bool* occ,
                  int64_t n, float ds_exp, float shift, float step, float thr, float t_min, std::vector<Sample>& s) {
  s.clear();
  float trans = 1.f;
  for (int64_t i = 0; i < n_in; ++i) {
    const float t = t_near + (i + 0.5f) * step;
    const float px = o[0] + t * d[0], py = o[1] + t * d[1], pz = o[2] + t * d[2];
    Trilinear tri = corners(px, py, pz, n);
    if (occ) {
      const float sc = 0.5f * (n - 1);
      int64_t cx = std::min<int64_t>(std::max<int64_t>(std::lround((px + 1.f) * sc), 0), n - 1);
      int64_t cy = std::min<int64_t>(std::max<int64_t>(std::lround((py + 1.f) * sc), 0), n - 1);
      int64_t cz = std::min<int64_t>(std::max<int64_t>(std::lround((pz + 1.f) * sc), 0), n - 1);
      if (!occ[(cz * n + cy) * n + cx]) continue;
    }
    float r = 0.f;
    for (int k = 0; k < 8; ++k) r += tri.w[k] * raw[tri.idx[k]];
    const float tau = softplus(r * ds_exp + shift) * step;
    const float e = std::exp(-tau);
    const float w = (1.f - e) * trans;
    s.push_back({tri, t, r, e, trans, w, w > thr});
    trans *= e;
    if (trans < t_min) break;
  }
}

inline float colour(const float* app, int64_t n3, int c, const Trilinear& tri, bool pixel_space, float* act_grad) {
  float a = 0.f;
  for (int k = 0; k < 8; ++k) a += tri.w[k] * app[c * n3 + tri.idx[k]];
  if (!pixel_space) {
    *act_grad = 1.f;
    return a;
  }
  const float sg = sigmoid(a);
  *act_grad = 2.f * sg * (1.f - sg);
  return 2.f * sg - 1.f;
}

}  // namespace

// Returns rgb (R, C), opacity (R), Σ w·t (R), weights (R, S) zero-padded, samples evaluated (R).
std::vector<torch::Tensor> forward(torch::Tensor o, torch::Tensor d, torch::Tensor t_near, torch::Tensor n_in,
                                   torch::Tensor raw, torch::Tensor app, torch::Tensor occ, double ds_exp,
                                   double shift, double step, double thr, double t_min, bool pixel_space,
                                   int64_t max_samples) {
  const int64_t R = o.size(0), n = raw.size(-1), C = app.size(0), n3 = n * n * n;
  auto rgb = torch::zeros({R, C}, o.options());
  auto opacity = torch::zeros({R}, o.options());
  auto depth = torch::zeros({R}, o.options());
  auto weights = torch::zeros({R, max_samples}, o.options());
  auto count = torch::zeros({R}, n_in.options());
  const float *po = o.data_ptr<float>(), *pd = d.data_ptr<float>(), *pt = t_near.data_ptr<float>();
  const int64_t* pn = n_in.data_ptr<int64_t>();
  const float *praw = raw.data_ptr<float>(), *papp = app.data_ptr<float>();
  const bool* pocc = occ.numel() ? occ.data_ptr<bool>() : nullptr;
  float *prgb = rgb.data_ptr<float>(), *pop = opacity.data_ptr<float>(), *pdep = depth.data_ptr<float>(),
        *pw = weights.data_ptr<float>();
  int64_t* pc = count.data_ptr<int64_t>();
#pragma omp parallel num_threads(at::get_num_threads())
  {
    std::vector<Sample> s;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      march(po + 3 * r, pd + 3 * r, pt[r], pn[r], praw, pocc, n, ds_exp, shift, step, thr, t_min, s);
      float op = 0.f, dep = 0.f;
      for (size_t j = 0; j < s.size(); ++j) {
        const Sample& q = s[j];
        op += q.w;
        dep += q.w * q.t;
        pw[r * max_samples + j] = q.w;
        if (!q.kept) continue;
        for (int c = 0; c < C; ++c) {
          float g;
          prgb[r * C + c] += q.w * colour(papp, n3, c, q.tri, pixel_space, &g);
        }
      }
      pop[r] = op;
      pdep[r] = dep;
      pc[r] = int64_t(s.size());
    }
  }
  return {rgb, opacity, depth, weights, count};
}

// Gradients of (rgb, opacity, Σ w·t, weights) → (density raw grid, appearance grid, d_scale).
// Each thread accumulates into its own grids (static ray split), summed in thread order: deterministic.
std::vector<torch::Tensor> backward(torch::Tensor g_rgb, torch::Tensor g_op, torch::Tensor g_dep, torch::Tensor g_w,
                                    torch::Tensor o, torch::Tensor d, torch::Tensor t_near, torch::Tensor n_in,
                                    torch::Tensor raw, torch::Tensor app, torch::Tensor occ, double ds_exp,
                                    double shift, double step, double thr, double t_min, bool pixel_space) {
  const int64_t R = o.size(0), n = raw.size(-1), C = app.size(0), n3 = n * n * n, S = g_w.size(1);
  const int nt = at::get_num_threads();
  auto g_raw = torch::zeros({nt, n3}, o.options());
  auto g_app = torch::zeros({nt, C * n3}, o.options());
  auto g_ds = torch::zeros({nt}, torch::dtype(torch::kFloat64));
  const float *po = o.data_ptr<float>(), *pd = d.data_ptr<float>(), *pt = t_near.data_ptr<float>();
  const int64_t* pn = n_in.data_ptr<int64_t>();
  const float *praw = raw.data_ptr<float>(), *papp = app.data_ptr<float>();
  const bool* pocc = occ.numel() ? occ.data_ptr<bool>() : nullptr;
  const float *pgr = g_rgb.data_ptr<float>(), *pgo = g_op.data_ptr<float>(), *pgd = g_dep.data_ptr<float>(),
              *pgw = g_w.data_ptr<float>();
  double* pgds = g_ds.data_ptr<double>();
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
    float* graw = g_raw.data_ptr<float>() + tid * n3;
    float* gapp = g_app.data_ptr<float>() + tid * C * n3;
    double gds = 0.0;
    std::vector<Sample> s;
    std::vector<float> dldw;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      march(po + 3 * r, pd + 3 * r, pt[r], pn[r], praw, pocc, n, ds_exp, shift, step, thr, t_min, s);
      dldw.resize(s.size());
      for (size_t j = 0; j < s.size(); ++j) {
        const Sample& q = s[j];
        float g = pgo[r] + pgd[r] * q.t + (int64_t(j) < S ? pgw[r * S + j] : 0.f);
        if (q.kept) {
          for (int c = 0; c < C; ++c) {
            float act_grad;
            const float col = colour(papp, n3, c, q.tri, pixel_space, &act_grad);
            const float gr = pgr[r * C + c];
            g += gr * col;
            const float ga = gr * q.w * act_grad;   // ∂L/∂(appearance raw) at the sample
            for (int k = 0; k < 8; ++k) gapp[c * n3 + q.tri.idx[k]] += ga * q.tri.w[k];
          }
        }
        dldw[j] = g;
      }
      float suffix = 0.f;   // Σ_{i>j} ∂L/∂w_i · w_i
      for (int64_t j = int64_t(s.size()) - 1; j >= 0; --j) {
        const Sample& q = s[j];
        const float dtau = dldw[j] * q.trans * q.e - suffix;
        suffix += dldw[j] * q.w;
        const float y = q.raw * ds_exp + shift;
        const float dy = dtau * step * sigmoid(y);
        const float dr = dy * ds_exp;
        for (int k = 0; k < 8; ++k) graw[q.tri.idx[k]] += dr * q.tri.w[k];
        gds += double(dy) * q.raw * ds_exp;
      }
    }
    pgds[tid] = gds;
  }
  if (nt == 1) return {g_raw[0], g_app[0].view({C, n3}), g_ds.sum().to(torch::kFloat32)};
  return {g_raw.sum(0), g_app.sum(0).view({C, n3}), g_ds.sum().to(torch::kFloat32)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused volume rendering, forward");
  m.def("backward", &backward, "fused volume rendering, backward");
}
