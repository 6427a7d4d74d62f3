// CUDA kernels of the preference-loss ops: one thread per pair, row or token, with the formulas
// of loss_math.h, launched on the current stream. The per-row reductions of the backward ops
// (the KL gradient of KTO, the advantage gradient of GRPO) are ATen sums of per-element terms.
//
// NOTE: these kernels compile in CI (bench/build_cuda_ops.sh) but have not yet run on a GPU.
// bench/gpu_check.sh is the prepared run of their tests there.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>

#include "../loss_math.h"
#include "../losses.h"

namespace pyalign {
namespace {

using namespace loss_math;

constexpr int kThreads = 256;

int blocks_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535)));
}

template <typename scalar_t>
struct DpoPointers {
  const scalar_t *chosen, *rejected, *reference_chosen, *reference_rejected, *chosen_tokens,
      *rejected_tokens;

  __device__ DpoPairInputs<scalar_t> pair(int64_t p) const {
    return {chosen[p],        rejected[p],       reference_chosen[p], reference_rejected[p],
            chosen_tokens[p], rejected_tokens[p]};
  }
};

template <typename scalar_t>
DpoPointers<scalar_t> dpo_pointers(const DpoArguments& args) {
  return {args.chosen.data_ptr<scalar_t>(),           args.rejected.data_ptr<scalar_t>(),
          args.reference_chosen.data_ptr<scalar_t>(), args.reference_rejected.data_ptr<scalar_t>(),
          args.chosen_tokens.data_ptr<scalar_t>(),    args.rejected_tokens.data_ptr<scalar_t>()};
}

template <typename scalar_t>
DpoHyperparameters<scalar_t> dpo_hyperparameters(const DpoArguments& args) {
  return {args.type, scalar_t(args.beta), scalar_t(args.label_smoothing), scalar_t(args.gamma)};
}

#define PYALIGN_GRID_STRIDE_LOOP(index, count)                                      \
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; \
       index < (count); index += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <typename scalar_t>
__global__ void dpo_forward_kernel(DpoPointers<scalar_t> in, DpoHyperparameters<scalar_t> hp,
                                   int64_t count, scalar_t* losses, scalar_t* chosen_rewards,
                                   scalar_t* rejected_rewards) {
  PYALIGN_GRID_STRIDE_LOOP(p, count) {
    losses[p] = dpo_pair_loss(in.pair(p), hp, &chosen_rewards[p], &rejected_rewards[p]);
  }
}

template <typename scalar_t>
__global__ void dpo_backward_kernel(DpoPointers<scalar_t> in, DpoHyperparameters<scalar_t> hp,
                                    int64_t count, const scalar_t* grad, scalar_t* grad_chosen,
                                    scalar_t* grad_rejected) {
  PYALIGN_GRID_STRIDE_LOOP(p, count) {
    scalar_t d_chosen, d_rejected;
    dpo_pair_grad(in.pair(p), hp, &d_chosen, &d_rejected);
    grad_chosen[p] = grad[p] * d_chosen;
    grad_rejected[p] = grad[p] * d_rejected;
  }
}

template <typename scalar_t>
__global__ void kto_forward_kernel(const scalar_t* policy, const scalar_t* reference,
                                   const bool* desirable, const scalar_t* kl, scalar_t beta,
                                   scalar_t desirable_weight, scalar_t undesirable_weight,
                                   int64_t count, scalar_t* losses, scalar_t* rewards) {
  PYALIGN_GRID_STRIDE_LOOP(i, count) {
    losses[i] = kto_row_loss(policy[i], reference[i], desirable[i], kl[0], beta, desirable_weight,
                             undesirable_weight, &rewards[i]);
  }
}

template <typename scalar_t>
__global__ void kto_backward_kernel(const scalar_t* policy, const scalar_t* reference,
                                    const bool* desirable, const scalar_t* kl, scalar_t beta,
                                    scalar_t desirable_weight, scalar_t undesirable_weight,
                                    int64_t count, const scalar_t* grad, scalar_t* grad_policy,
                                    scalar_t* grad_kl_rows) {
  PYALIGN_GRID_STRIDE_LOOP(i, count) {
    scalar_t d_policy, d_kl;
    kto_row_grad(policy[i], reference[i], desirable[i], kl[0], beta, desirable_weight,
                 undesirable_weight, &d_policy, &d_kl);
    grad_policy[i] = grad[i] * d_policy;
    grad_kl_rows[i] = grad[i] * d_kl;
  }
}

template <typename scalar_t>
__global__ void orpo_forward_kernel(const scalar_t* chosen, const scalar_t* rejected,
                                    const scalar_t* chosen_tokens, const scalar_t* rejected_tokens,
                                    scalar_t beta, int64_t count, scalar_t* losses,
                                    scalar_t* log_odds) {
  PYALIGN_GRID_STRIDE_LOOP(p, count) {
    losses[p] = orpo_pair_loss(chosen[p], rejected[p], chosen_tokens[p], rejected_tokens[p], beta,
                               &log_odds[p]);
  }
}

template <typename scalar_t>
__global__ void orpo_backward_kernel(const scalar_t* chosen, const scalar_t* rejected,
                                     const scalar_t* chosen_tokens, const scalar_t* rejected_tokens,
                                     scalar_t beta, int64_t count, const scalar_t* grad,
                                     scalar_t* grad_chosen, scalar_t* grad_rejected) {
  PYALIGN_GRID_STRIDE_LOOP(p, count) {
    scalar_t d_chosen, d_rejected;
    orpo_pair_grad(chosen[p], rejected[p], chosen_tokens[p], rejected_tokens[p], beta, &d_chosen,
                   &d_rejected);
    grad_chosen[p] = grad[p] * d_chosen;
    grad_rejected[p] = grad[p] * d_rejected;
  }
}

template <typename scalar_t>
struct GrpoPointers {
  const scalar_t* logps;
  const scalar_t* old_logps;  // nullptr when absent
  const scalar_t* ref_logps;  // nullptr when absent
  const scalar_t* advantages;
  const bool* mask;
  int64_t count, num_tokens;
};

template <typename scalar_t>
GrpoPointers<scalar_t> grpo_pointers(const GrpoArguments& args) {
  return {args.logps.data_ptr<scalar_t>(),
          args.old_logps.defined() ? args.old_logps.data_ptr<scalar_t>() : nullptr,
          args.ref_logps.defined() ? args.ref_logps.data_ptr<scalar_t>() : nullptr,
          args.advantages.data_ptr<scalar_t>(),
          args.mask.data_ptr<bool>(),
          args.logps.numel(),
          args.logps.size(1)};
}

template <typename scalar_t>
GrpoHyperparameters<scalar_t> grpo_hyperparameters(const GrpoArguments& args) {
  return {scalar_t(args.beta), scalar_t(args.epsilon_low), scalar_t(args.epsilon_high),
          args.old_logps.defined(), args.ref_logps.defined()};
}

template <typename scalar_t>
__global__ void grpo_forward_kernel(GrpoPointers<scalar_t> in, GrpoHyperparameters<scalar_t> hp,
                                    scalar_t* losses, scalar_t* kl, bool* low_clipped,
                                    bool* high_clipped) {
  PYALIGN_GRID_STRIDE_LOOP(i, in.count) {
    if (!in.mask[i]) {
      losses[i] = kl[i] = 0;
      low_clipped[i] = high_clipped[i] = false;
      continue;
    }
    const GrpoTokenOutputs<scalar_t> out = grpo_token_loss(
        in.logps[i], in.old_logps ? in.old_logps[i] : scalar_t(0),
        in.ref_logps ? in.ref_logps[i] : scalar_t(0), in.advantages[i / in.num_tokens], hp);
    losses[i] = out.loss;
    kl[i] = out.kl;
    low_clipped[i] = out.low_clipped;
    high_clipped[i] = out.high_clipped;
  }
}

template <typename scalar_t>
__global__ void grpo_backward_kernel(GrpoPointers<scalar_t> in, GrpoHyperparameters<scalar_t> hp,
                                     const scalar_t* grad, scalar_t* grad_logps, scalar_t* grad_old,
                                     scalar_t* grad_ref, scalar_t* grad_advantage_terms) {
  PYALIGN_GRID_STRIDE_LOOP(i, in.count) {
    GrpoTokenGrads<scalar_t> d{0, 0, 0, 0};
    if (in.mask[i]) {
      d = grpo_token_grad(grad[i], in.logps[i], in.old_logps ? in.old_logps[i] : scalar_t(0),
                          in.ref_logps ? in.ref_logps[i] : scalar_t(0),
                          in.advantages[i / in.num_tokens], hp);
    }
    grad_logps[i] = d.logp;
    if (grad_old) grad_old[i] = d.old_logp;
    if (grad_ref) grad_ref[i] = d.ref_logp;
    grad_advantage_terms[i] = d.advantage;
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> dpo_loss_cuda(
    const at::Tensor& chosen, const at::Tensor& rejected,
    const std::optional<at::Tensor>& reference_chosen,
    const std::optional<at::Tensor>& reference_rejected,
    const std::optional<at::Tensor>& chosen_tokens,
    const std::optional<at::Tensor>& rejected_tokens, c10::string_view loss_type, double beta,
    double label_smoothing, double gamma) {
  const c10::cuda::CUDAGuard device_guard(chosen.device());
  const DpoArguments args = prepare_dpo_arguments(
      "dpo_loss", chosen, rejected, reference_chosen, reference_rejected, chosen_tokens,
      rejected_tokens, std::string(loss_type), beta, label_smoothing, gamma);
  at::Tensor losses = at::empty_like(args.chosen);            // (P,)
  at::Tensor chosen_rewards = at::empty_like(args.chosen);    // (P,)
  at::Tensor rejected_rewards = at::empty_like(args.chosen);  // (P,)
  const int64_t count = args.chosen.numel();
  if (count == 0) return {losses, chosen_rewards, rejected_rewards};

  AT_DISPATCH_FLOATING_TYPES(args.chosen.scalar_type(), "dpo_loss_cuda", [&] {
    dpo_forward_kernel<scalar_t>
        <<<blocks_for(count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            dpo_pointers<scalar_t>(args), dpo_hyperparameters<scalar_t>(args), count,
            losses.data_ptr<scalar_t>(), chosen_rewards.data_ptr<scalar_t>(),
            rejected_rewards.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {losses, chosen_rewards, rejected_rewards};
}

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>>
dpo_loss_backward_cuda(const at::Tensor& grad_losses, const at::Tensor& chosen,
                       const at::Tensor& rejected,
                       const std::optional<at::Tensor>& reference_chosen,
                       const std::optional<at::Tensor>& reference_rejected,
                       const std::optional<at::Tensor>& chosen_tokens,
                       const std::optional<at::Tensor>& rejected_tokens, c10::string_view loss_type,
                       double beta, double label_smoothing, double gamma) {
  constexpr const char* op_name = "dpo_loss_backward";
  const c10::cuda::CUDAGuard device_guard(chosen.device());
  const DpoArguments args = prepare_dpo_arguments(
      op_name, chosen, rejected, reference_chosen, reference_rejected, chosen_tokens,
      rejected_tokens, std::string(loss_type), beta, label_smoothing, gamma);
  const at::Tensor grad =
      prepare_grad(op_name, grad_losses, args.chosen.sizes(), args.chosen.scalar_type());
  at::Tensor grad_chosen = at::zeros_like(args.chosen);    // (P,)
  at::Tensor grad_rejected = at::zeros_like(args.chosen);  // (P,)
  const int64_t count = args.chosen.numel();

  if (count > 0) {
    AT_DISPATCH_FLOATING_TYPES(args.chosen.scalar_type(), "dpo_loss_backward_cuda", [&] {
      dpo_backward_kernel<scalar_t>
          <<<blocks_for(count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
              dpo_pointers<scalar_t>(args), dpo_hyperparameters<scalar_t>(args), count,
              grad.data_ptr<scalar_t>(), grad_chosen.data_ptr<scalar_t>(),
              grad_rejected.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  std::optional<at::Tensor> grad_reference_chosen;
  std::optional<at::Tensor> grad_reference_rejected;
  if (reference_chosen.has_value()) {
    grad_reference_chosen = grad_chosen.neg().to(reference_chosen->scalar_type());
    grad_reference_rejected = grad_rejected.neg().to(reference_rejected->scalar_type());
  }
  return {grad_chosen.to(chosen.scalar_type()), grad_rejected.to(rejected.scalar_type()),
          grad_reference_chosen, grad_reference_rejected};
}

std::tuple<at::Tensor, at::Tensor> kto_loss_cuda(const at::Tensor& policy_logps,
                                                 const at::Tensor& reference_logps,
                                                 const at::Tensor& labels, const at::Tensor& kl,
                                                 double beta, double desirable_weight,
                                                 double undesirable_weight) {
  const c10::cuda::CUDAGuard device_guard(policy_logps.device());
  const KtoArguments args = prepare_kto_arguments("kto_loss", policy_logps, reference_logps, labels,
                                                  kl, beta, desirable_weight, undesirable_weight);
  at::Tensor losses = at::empty_like(args.policy);   // (B,)
  at::Tensor rewards = at::empty_like(args.policy);  // (B,)
  const int64_t count = args.policy.numel();
  if (count == 0) return {losses, rewards};

  AT_DISPATCH_FLOATING_TYPES(args.policy.scalar_type(), "kto_loss_cuda", [&] {
    kto_forward_kernel<scalar_t>
        <<<blocks_for(count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            args.policy.data_ptr<scalar_t>(), args.reference.data_ptr<scalar_t>(),
            args.labels.data_ptr<bool>(), args.kl.data_ptr<scalar_t>(), scalar_t(args.beta),
            scalar_t(args.desirable_weight), scalar_t(args.undesirable_weight), count,
            losses.data_ptr<scalar_t>(), rewards.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {losses, rewards};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kto_loss_backward_cuda(
    const at::Tensor& grad_losses, const at::Tensor& policy_logps,
    const at::Tensor& reference_logps, const at::Tensor& labels, const at::Tensor& kl, double beta,
    double desirable_weight, double undesirable_weight) {
  constexpr const char* op_name = "kto_loss_backward";
  const c10::cuda::CUDAGuard device_guard(policy_logps.device());
  const KtoArguments args = prepare_kto_arguments(op_name, policy_logps, reference_logps, labels,
                                                  kl, beta, desirable_weight, undesirable_weight);
  const at::Tensor grad =
      prepare_grad(op_name, grad_losses, args.policy.sizes(), args.policy.scalar_type());
  at::Tensor grad_policy = at::zeros_like(args.policy);   // (B,)
  at::Tensor grad_kl_rows = at::zeros_like(args.policy);  // (B,), summed below
  const int64_t count = args.policy.numel();

  if (count > 0) {
    AT_DISPATCH_FLOATING_TYPES(args.policy.scalar_type(), "kto_loss_backward_cuda", [&] {
      kto_backward_kernel<scalar_t>
          <<<blocks_for(count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
              args.policy.data_ptr<scalar_t>(), args.reference.data_ptr<scalar_t>(),
              args.labels.data_ptr<bool>(), args.kl.data_ptr<scalar_t>(), scalar_t(args.beta),
              scalar_t(args.desirable_weight), scalar_t(args.undesirable_weight), count,
              grad.data_ptr<scalar_t>(), grad_policy.data_ptr<scalar_t>(),
              grad_kl_rows.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_policy.to(policy_logps.scalar_type()),
          grad_policy.neg().to(reference_logps.scalar_type()),
          grad_kl_rows.sum().to(kl.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> orpo_loss_cuda(const at::Tensor& chosen,
                                                  const at::Tensor& rejected,
                                                  const at::Tensor& chosen_tokens,
                                                  const at::Tensor& rejected_tokens, double beta) {
  const c10::cuda::CUDAGuard device_guard(chosen.device());
  const OrpoArguments args =
      prepare_orpo_arguments("orpo_loss", chosen, rejected, chosen_tokens, rejected_tokens, beta);
  at::Tensor losses = at::empty_like(args.chosen);    // (P,)
  at::Tensor log_odds = at::empty_like(args.chosen);  // (P,)
  const int64_t count = args.chosen.numel();
  if (count == 0) return {losses, log_odds};

  AT_DISPATCH_FLOATING_TYPES(args.chosen.scalar_type(), "orpo_loss_cuda", [&] {
    orpo_forward_kernel<scalar_t>
        <<<blocks_for(count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            args.chosen.data_ptr<scalar_t>(), args.rejected.data_ptr<scalar_t>(),
            args.chosen_tokens.data_ptr<scalar_t>(), args.rejected_tokens.data_ptr<scalar_t>(),
            scalar_t(args.beta), count, losses.data_ptr<scalar_t>(), log_odds.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {losses, log_odds};
}

std::tuple<at::Tensor, at::Tensor> orpo_loss_backward_cuda(
    const at::Tensor& grad_losses, const at::Tensor& chosen, const at::Tensor& rejected,
    const at::Tensor& chosen_tokens, const at::Tensor& rejected_tokens, double beta) {
  constexpr const char* op_name = "orpo_loss_backward";
  const c10::cuda::CUDAGuard device_guard(chosen.device());
  const OrpoArguments args =
      prepare_orpo_arguments(op_name, chosen, rejected, chosen_tokens, rejected_tokens, beta);
  const at::Tensor grad =
      prepare_grad(op_name, grad_losses, args.chosen.sizes(), args.chosen.scalar_type());
  at::Tensor grad_chosen = at::zeros_like(args.chosen);    // (P,)
  at::Tensor grad_rejected = at::zeros_like(args.chosen);  // (P,)
  const int64_t count = args.chosen.numel();

  if (count > 0) {
    AT_DISPATCH_FLOATING_TYPES(args.chosen.scalar_type(), "orpo_loss_backward_cuda", [&] {
      orpo_backward_kernel<scalar_t>
          <<<blocks_for(count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
              args.chosen.data_ptr<scalar_t>(), args.rejected.data_ptr<scalar_t>(),
              args.chosen_tokens.data_ptr<scalar_t>(), args.rejected_tokens.data_ptr<scalar_t>(),
              scalar_t(args.beta), count, grad.data_ptr<scalar_t>(),
              grad_chosen.data_ptr<scalar_t>(), grad_rejected.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_chosen.to(chosen.scalar_type()), grad_rejected.to(rejected.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> grpo_loss_cuda(
    const at::Tensor& logps, const std::optional<at::Tensor>& old_logps,
    const std::optional<at::Tensor>& ref_logps, const at::Tensor& advantages,
    const at::Tensor& completion_mask, double beta, double epsilon_low, double epsilon_high) {
  const c10::cuda::CUDAGuard device_guard(logps.device());
  const GrpoArguments args =
      prepare_grpo_arguments("grpo_loss", logps, old_logps, ref_logps, advantages, completion_mask,
                             beta, epsilon_low, epsilon_high);
  at::Tensor losses = at::empty_like(args.logps);       // (B, T)
  at::Tensor kl = at::empty_like(args.logps);           // (B, T)
  at::Tensor low_clipped = at::empty_like(args.mask);   // (B, T) bool
  at::Tensor high_clipped = at::empty_like(args.mask);  // (B, T) bool
  const int64_t count = args.logps.numel();
  if (count == 0) return {losses, kl, low_clipped, high_clipped};

  AT_DISPATCH_FLOATING_TYPES(args.logps.scalar_type(), "grpo_loss_cuda", [&] {
    grpo_forward_kernel<scalar_t>
        <<<blocks_for(count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            grpo_pointers<scalar_t>(args), grpo_hyperparameters<scalar_t>(args),
            losses.data_ptr<scalar_t>(), kl.data_ptr<scalar_t>(), low_clipped.data_ptr<bool>(),
            high_clipped.data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {losses, kl, low_clipped, high_clipped};
}

std::tuple<at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>, at::Tensor>
grpo_loss_backward_cuda(const at::Tensor& grad_losses, const at::Tensor& logps,
                        const std::optional<at::Tensor>& old_logps,
                        const std::optional<at::Tensor>& ref_logps, const at::Tensor& advantages,
                        const at::Tensor& completion_mask, double beta, double epsilon_low,
                        double epsilon_high) {
  constexpr const char* op_name = "grpo_loss_backward";
  const c10::cuda::CUDAGuard device_guard(logps.device());
  const GrpoArguments args =
      prepare_grpo_arguments(op_name, logps, old_logps, ref_logps, advantages, completion_mask,
                             beta, epsilon_low, epsilon_high);
  const at::Tensor grad =
      prepare_grad(op_name, grad_losses, args.logps.sizes(), args.logps.scalar_type());
  at::Tensor grad_logps = at::zeros_like(args.logps);  // (B, T)
  at::Tensor grad_old = args.old_logps.defined() ? at::zeros_like(args.logps) : at::Tensor();
  at::Tensor grad_ref = args.ref_logps.defined() ? at::zeros_like(args.logps) : at::Tensor();
  at::Tensor grad_advantage_terms = at::zeros_like(args.logps);  // (B, T), summed below
  const int64_t count = args.logps.numel();

  if (count > 0) {
    AT_DISPATCH_FLOATING_TYPES(args.logps.scalar_type(), "grpo_loss_backward_cuda", [&] {
      grpo_backward_kernel<scalar_t>
          <<<blocks_for(count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
              grpo_pointers<scalar_t>(args), grpo_hyperparameters<scalar_t>(args),
              grad.data_ptr<scalar_t>(), grad_logps.data_ptr<scalar_t>(),
              grad_old.defined() ? grad_old.data_ptr<scalar_t>() : nullptr,
              grad_ref.defined() ? grad_ref.data_ptr<scalar_t>() : nullptr,
              grad_advantage_terms.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  std::optional<at::Tensor> grad_old_out;
  std::optional<at::Tensor> grad_ref_out;
  if (grad_old.defined()) grad_old_out = grad_old.to(old_logps->scalar_type());
  if (grad_ref.defined()) grad_ref_out = grad_ref.to(ref_logps->scalar_type());
  return {grad_logps.to(logps.scalar_type()), grad_old_out, grad_ref_out,
          grad_advantage_terms.sum(1).to(advantages.scalar_type())};
}

}  // namespace pyalign

TORCH_LIBRARY_IMPL(pyalign, CUDA, m) {
  m.impl("dpo_loss", &pyalign::dpo_loss_cuda);
  m.impl("dpo_loss_backward", &pyalign::dpo_loss_backward_cuda);
  m.impl("kto_loss", &pyalign::kto_loss_cuda);
  m.impl("kto_loss_backward", &pyalign::kto_loss_backward_cuda);
  m.impl("orpo_loss", &pyalign::orpo_loss_cuda);
  m.impl("orpo_loss_backward", &pyalign::orpo_loss_backward_cuda);
  m.impl("grpo_loss", &pyalign::grpo_loss_cuda);
  m.impl("grpo_loss_backward", &pyalign::grpo_loss_backward_cuda);
}
