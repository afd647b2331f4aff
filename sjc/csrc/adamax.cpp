// Adamax's update in one pass over memory (CPU, float32): the same arithmetic as torch.optim.Adamax
// (lerp of the first moment, max of the decayed infinity norm and |g| + eps, step lr / (1 − β1^t) · m / u),
// which as separate tensor operations reads and writes the 5 M-element grids of the reference field several
// times per step. Element-wise, so the result does not depend on the thread count.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>

void adamax_step(torch::Tensor param, torch::Tensor grad, torch::Tensor exp_avg, torch::Tensor exp_inf, double beta1,
                 double beta2, double eps, double step_size) {
  for (const auto& t : {grad, exp_avg, exp_inf})
    TORCH_CHECK(t.strides() == param.strides() && t.sizes() == param.sizes() && t.scalar_type() == torch::kFloat32,
                "adamax_step: parameter, gradient and state must be float32 with one layout");
  TORCH_CHECK(param.is_non_overlapping_and_dense() && param.scalar_type() == torch::kFloat32 && param.is_cpu(),
              "adamax_step: a dense float32 CPU parameter is required");
  float *p = param.data_ptr<float>(), *m = exp_avg.data_ptr<float>(), *u = exp_inf.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  const float w = float(1.0 - beta1), b2 = float(beta2), e = float(eps), lr = float(step_size);
  const int64_t n = param.numel();
#pragma omp parallel for simd schedule(static) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < n; ++i) {
    const float mi = m[i] + w * (g[i] - m[i]);
    const float ui = std::max(u[i] * b2, std::abs(g[i]) + e);
    m[i] = mi;
    u[i] = ui;
    p[i] -= lr * (mi / ui);
  }
}
