// CPU kernels of the preference-loss ops: element loops over the formulas of loss_math.h,
// split across torch's intra-op thread pool by at::parallel_for.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "../loss_math.h"
#include "../losses.h"

namespace pyalign {
namespace {

using namespace loss_math;

// Elements per task below which at::parallel_for runs serially; the per-element work is a
// handful of exp and log calls.
constexpr int64_t kGrainSize = 2048;

// Raw pointers to the prepared (P,) inputs of the DPO ops.
template <typename scalar_t>
struct DpoPointers {
  const scalar_t *chosen, *rejected, *reference_chosen, *reference_rejected, *chosen_tokens,
      *rejected_tokens;

  explicit DpoPointers(const DpoArguments& args)
      : chosen(args.chosen.data_ptr<scalar_t>()),
        rejected(args.rejected.data_ptr<scalar_t>()),
        reference_chosen(args.reference_chosen.data_ptr<scalar_t>()),
        reference_rejected(args.reference_rejected.data_ptr<scalar_t>()),
        chosen_tokens(args.chosen_tokens.data_ptr<scalar_t>()),
        rejected_tokens(args.rejected_tokens.data_ptr<scalar_t>()) {}

  DpoPairInputs<scalar_t> pair(int64_t p) const {
    return {chosen[p],        rejected[p],       reference_chosen[p], reference_rejected[p],
            chosen_tokens[p], rejected_tokens[p]};
  }
};

template <typename scalar_t>
DpoHyperparameters<scalar_t> dpo_hyperparameters(const DpoArguments& args) {
  return {args.type, scalar_t(args.beta), scalar_t(args.label_smoothing), scalar_t(args.gamma)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> dpo_loss_cpu(
    const at::Tensor& chosen, const at::Tensor& rejected,
    const std::optional<at::Tensor>& reference_chosen,
    const std::optional<at::Tensor>& reference_rejected,
    const std::optional<at::Tensor>& chosen_tokens,
    const std::optional<at::Tensor>& rejected_tokens, c10::string_view loss_type, double beta,
    double label_smoothing, double gamma) {
  const DpoArguments args = prepare_dpo_arguments(
      "dpo_loss", chosen, rejected, reference_chosen, reference_rejected, chosen_tokens,
      rejected_tokens, std::string(loss_type), beta, label_smoothing, gamma);
  at::Tensor losses = at::empty_like(args.chosen);            // (P,)
  at::Tensor chosen_rewards = at::empty_like(args.chosen);    // (P,)
  at::Tensor rejected_rewards = at::empty_like(args.chosen);  // (P,)

  AT_DISPATCH_FLOATING_TYPES(args.chosen.scalar_type(), "dpo_loss_cpu", [&] {
    const auto hp = dpo_hyperparameters<scalar_t>(args);
    const DpoPointers<scalar_t> inputs(args);
    scalar_t* loss_out = losses.data_ptr<scalar_t>();
    scalar_t* chosen_out = chosen_rewards.data_ptr<scalar_t>();
    scalar_t* rejected_out = rejected_rewards.data_ptr<scalar_t>();
    at::parallel_for(0, args.chosen.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        loss_out[p] = dpo_pair_loss(inputs.pair(p), hp, &chosen_out[p], &rejected_out[p]);
      }
    });
  });
  return {losses, chosen_rewards, rejected_rewards};
}

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>>
dpo_loss_backward_cpu(const at::Tensor& grad_losses, const at::Tensor& chosen,
                      const at::Tensor& rejected, const std::optional<at::Tensor>& reference_chosen,
                      const std::optional<at::Tensor>& reference_rejected,
                      const std::optional<at::Tensor>& chosen_tokens,
                      const std::optional<at::Tensor>& rejected_tokens, c10::string_view loss_type,
                      double beta, double label_smoothing, double gamma) {
  constexpr const char* op_name = "dpo_loss_backward";
  const DpoArguments args = prepare_dpo_arguments(
      op_name, chosen, rejected, reference_chosen, reference_rejected, chosen_tokens,
      rejected_tokens, std::string(loss_type), beta, label_smoothing, gamma);
  const at::Tensor grad =
      prepare_grad(op_name, grad_losses, args.chosen.sizes(), args.chosen.scalar_type());
  at::Tensor grad_chosen = at::empty_like(args.chosen);    // (P,)
  at::Tensor grad_rejected = at::empty_like(args.chosen);  // (P,)

  AT_DISPATCH_FLOATING_TYPES(args.chosen.scalar_type(), "dpo_loss_backward_cpu", [&] {
    const auto hp = dpo_hyperparameters<scalar_t>(args);
    const DpoPointers<scalar_t> inputs(args);
    const scalar_t* grad_in = grad.data_ptr<scalar_t>();
    scalar_t* chosen_out = grad_chosen.data_ptr<scalar_t>();
    scalar_t* rejected_out = grad_rejected.data_ptr<scalar_t>();
    at::parallel_for(0, args.chosen.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        scalar_t d_chosen, d_rejected;
        dpo_pair_grad(inputs.pair(p), hp, &d_chosen, &d_rejected);
        chosen_out[p] = grad_in[p] * d_chosen;
        rejected_out[p] = grad_in[p] * d_rejected;
      }
    });
  });

  std::optional<at::Tensor> grad_reference_chosen;
  std::optional<at::Tensor> grad_reference_rejected;
  if (reference_chosen.has_value()) {
    grad_reference_chosen = grad_chosen.neg().to(reference_chosen->scalar_type());
    grad_reference_rejected = grad_rejected.neg().to(reference_rejected->scalar_type());
  }
  return {grad_chosen.to(chosen.scalar_type()), grad_rejected.to(rejected.scalar_type()),
          grad_reference_chosen, grad_reference_rejected};
}

std::tuple<at::Tensor, at::Tensor> kto_loss_cpu(const at::Tensor& policy_logps,
                                                const at::Tensor& reference_logps,
                                                const at::Tensor& labels, const at::Tensor& kl,
                                                double beta, double desirable_weight,
                                                double undesirable_weight) {
  const KtoArguments args = prepare_kto_arguments("kto_loss", policy_logps, reference_logps, labels,
                                                  kl, beta, desirable_weight, undesirable_weight);
  at::Tensor losses = at::empty_like(args.policy);   // (B,)
  at::Tensor rewards = at::empty_like(args.policy);  // (B,)

  AT_DISPATCH_FLOATING_TYPES(args.policy.scalar_type(), "kto_loss_cpu", [&] {
    const scalar_t* policy = args.policy.data_ptr<scalar_t>();
    const scalar_t* reference = args.reference.data_ptr<scalar_t>();
    const bool* desirable = args.labels.data_ptr<bool>();
    const scalar_t kl_value = args.kl.data_ptr<scalar_t>()[0];
    scalar_t* loss_out = losses.data_ptr<scalar_t>();
    scalar_t* reward_out = rewards.data_ptr<scalar_t>();
    at::parallel_for(0, args.policy.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        loss_out[i] = kto_row_loss(policy[i], reference[i], desirable[i], kl_value,
                                   scalar_t(args.beta), scalar_t(args.desirable_weight),
                                   scalar_t(args.undesirable_weight), &reward_out[i]);
      }
    });
  });
  return {losses, rewards};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kto_loss_backward_cpu(
    const at::Tensor& grad_losses, const at::Tensor& policy_logps,
    const at::Tensor& reference_logps, const at::Tensor& labels, const at::Tensor& kl, double beta,
    double desirable_weight, double undesirable_weight) {
  constexpr const char* op_name = "kto_loss_backward";
  const KtoArguments args = prepare_kto_arguments(op_name, policy_logps, reference_logps, labels,
                                                  kl, beta, desirable_weight, undesirable_weight);
  const at::Tensor grad =
      prepare_grad(op_name, grad_losses, args.policy.sizes(), args.policy.scalar_type());
  at::Tensor grad_policy = at::empty_like(args.policy);   // (B,)
  at::Tensor grad_kl_rows = at::empty_like(args.policy);  // (B,), summed below

  AT_DISPATCH_FLOATING_TYPES(args.policy.scalar_type(), "kto_loss_backward_cpu", [&] {
    const scalar_t* policy = args.policy.data_ptr<scalar_t>();
    const scalar_t* reference = args.reference.data_ptr<scalar_t>();
    const bool* desirable = args.labels.data_ptr<bool>();
    const scalar_t kl_value = args.kl.data_ptr<scalar_t>()[0];
    const scalar_t* grad_in = grad.data_ptr<scalar_t>();
    scalar_t* policy_out = grad_policy.data_ptr<scalar_t>();
    scalar_t* kl_out = grad_kl_rows.data_ptr<scalar_t>();
    at::parallel_for(0, args.policy.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t d_policy, d_kl;
        kto_row_grad(policy[i], reference[i], desirable[i], kl_value, scalar_t(args.beta),
                     scalar_t(args.desirable_weight), scalar_t(args.undesirable_weight), &d_policy,
                     &d_kl);
        policy_out[i] = grad_in[i] * d_policy;
        kl_out[i] = grad_in[i] * d_kl;
      }
    });
  });
  return {grad_policy.to(policy_logps.scalar_type()),
          grad_policy.neg().to(reference_logps.scalar_type()),
          grad_kl_rows.sum().to(kl.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> orpo_loss_cpu(const at::Tensor& chosen,
                                                 const at::Tensor& rejected,
                                                 const at::Tensor& chosen_tokens,
                                                 const at::Tensor& rejected_tokens, double beta) {
  const OrpoArguments args =
      prepare_orpo_arguments("orpo_loss", chosen, rejected, chosen_tokens, rejected_tokens, beta);
  at::Tensor losses = at::empty_like(args.chosen);    // (P,)
  at::Tensor log_odds = at::empty_like(args.chosen);  // (P,)

  AT_DISPATCH_FLOATING_TYPES(args.chosen.scalar_type(), "orpo_loss_cpu", [&] {
    const scalar_t* chosen_in = args.chosen.data_ptr<scalar_t>();
    const scalar_t* rejected_in = args.rejected.data_ptr<scalar_t>();
    const scalar_t* chosen_count = args.chosen_tokens.data_ptr<scalar_t>();
    const scalar_t* rejected_count = args.rejected_tokens.data_ptr<scalar_t>();
    scalar_t* loss_out = losses.data_ptr<scalar_t>();
    scalar_t* odds_out = log_odds.data_ptr<scalar_t>();
    at::parallel_for(0, args.chosen.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        loss_out[p] = orpo_pair_loss(chosen_in[p], rejected_in[p], chosen_count[p],
                                     rejected_count[p], scalar_t(args.beta), &odds_out[p]);
      }
    });
  });
  return {losses, log_odds};
}

std::tuple<at::Tensor, at::Tensor> orpo_loss_backward_cpu(
    const at::Tensor& grad_losses, const at::Tensor& chosen, const at::Tensor& rejected,
    const at::Tensor& chosen_tokens, const at::Tensor& rejected_tokens, double beta) {
  constexpr const char* op_name = "orpo_loss_backward";
  const OrpoArguments args =
      prepare_orpo_arguments(op_name, chosen, rejected, chosen_tokens, rejected_tokens, beta);
  const at::Tensor grad =
      prepare_grad(op_name, grad_losses, args.chosen.sizes(), args.chosen.scalar_type());
  at::Tensor grad_chosen = at::empty_like(args.chosen);    // (P,)
  at::Tensor grad_rejected = at::empty_like(args.chosen);  // (P,)

  AT_DISPATCH_FLOATING_TYPES(args.chosen.scalar_type(), "orpo_loss_backward_cpu", [&] {
    const scalar_t* chosen_in = args.chosen.data_ptr<scalar_t>();
    const scalar_t* rejected_in = args.rejected.data_ptr<scalar_t>();
    const scalar_t* chosen_count = args.chosen_tokens.data_ptr<scalar_t>();
    const scalar_t* rejected_count = args.rejected_tokens.data_ptr<scalar_t>();
    const scalar_t* grad_in = grad.data_ptr<scalar_t>();
    scalar_t* chosen_out = grad_chosen.data_ptr<scalar_t>();
    scalar_t* rejected_out = grad_rejected.data_ptr<scalar_t>();
    at::parallel_for(0, args.chosen.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        scalar_t d_chosen, d_rejected;
        orpo_pair_grad(chosen_in[p], rejected_in[p], chosen_count[p], rejected_count[p],
                       scalar_t(args.beta), &d_chosen, &d_rejected);
        chosen_out[p] = grad_in[p] * d_chosen;
        rejected_out[p] = grad_in[p] * d_rejected;
      }
    });
  });
  return {grad_chosen.to(chosen.scalar_type()), grad_rejected.to(rejected.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> grpo_loss_cpu(
    const at::Tensor& logps, const std::optional<at::Tensor>& old_logps,
    const std::optional<at::Tensor>& ref_logps, const at::Tensor& advantages,
    const at::Tensor& completion_mask, double beta, double epsilon_low, double epsilon_high) {
  const GrpoArguments args =
      prepare_grpo_arguments("grpo_loss", logps, old_logps, ref_logps, advantages, completion_mask,
                             beta, epsilon_low, epsilon_high);
  const int64_t num_tokens = args.logps.size(1);
  at::Tensor losses = at::empty_like(args.logps);       // (B, T)
  at::Tensor kl = at::empty_like(args.logps);           // (B, T)
  at::Tensor low_clipped = at::empty_like(args.mask);   // (B, T) bool
  at::Tensor high_clipped = at::empty_like(args.mask);  // (B, T) bool

  AT_DISPATCH_FLOATING_TYPES(args.logps.scalar_type(), "grpo_loss_cpu", [&] {
    const GrpoHyperparameters<scalar_t> hp{scalar_t(args.beta), scalar_t(args.epsilon_low),
                                           scalar_t(args.epsilon_high), args.old_logps.defined(),
                                           args.ref_logps.defined()};
    const scalar_t* policy = args.logps.data_ptr<scalar_t>();
    const scalar_t* old = hp.has_old ? args.old_logps.data_ptr<scalar_t>() : nullptr;
    const scalar_t* reference = hp.has_reference ? args.ref_logps.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gains = args.advantages.data_ptr<scalar_t>();
    const bool* mask = args.mask.data_ptr<bool>();
    scalar_t* loss_out = losses.data_ptr<scalar_t>();
    scalar_t* kl_out = kl.data_ptr<scalar_t>();
    bool* low_out = low_clipped.data_ptr<bool>();
    bool* high_out = high_clipped.data_ptr<bool>();
    at::parallel_for(0, args.logps.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (!mask[i]) {
          loss_out[i] = kl_out[i] = 0;
          low_out[i] = high_out[i] = false;
          continue;
        }
        const GrpoTokenOutputs<scalar_t> out =
            grpo_token_loss(policy[i], old ? old[i] : scalar_t(0),
                            reference ? reference[i] : scalar_t(0), gains[i / num_tokens], hp);
        loss_out[i] = out.loss;
        kl_out[i] = out.kl;
        low_out[i] = out.low_clipped;
        high_out[i] = out.high_clipped;
      }
    });
  });
  return {losses, kl, low_clipped, high_clipped};
}

std::tuple<at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>, at::Tensor>
grpo_loss_backward_cpu(const at::Tensor& grad_losses, const at::Tensor& logps,
                       const std::optional<at::Tensor>& old_logps,
                       const std::optional<at::Tensor>& ref_logps, const at::Tensor& advantages,
                       const at::Tensor& completion_mask, double beta, double epsilon_low,
                       double epsilon_high) {
  constexpr const char* op_name = "grpo_loss_backward";
  const GrpoArguments args =
      prepare_grpo_arguments(op_name, logps, old_logps, ref_logps, advantages, completion_mask,
                             beta, epsilon_low, epsilon_high);
  const at::Tensor grad =
      prepare_grad(op_name, grad_losses, args.logps.sizes(), args.logps.scalar_type());
  const int64_t num_sequences = args.logps.size(0);
  const int64_t num_tokens = args.logps.size(1);
  at::Tensor grad_policy = at::empty_like(args.logps);  // (B, T)
  at::Tensor grad_old = args.old_logps.defined() ? at::empty_like(args.logps) : at::Tensor();
  at::Tensor grad_reference = args.ref_logps.defined() ? at::empty_like(args.logps) : at::Tensor();
  at::Tensor grad_advantages = at::empty_like(args.advantages);  // (B,)

  AT_DISPATCH_FLOATING_TYPES(args.logps.scalar_type(), "grpo_loss_backward_cpu", [&] {
    const GrpoHyperparameters<scalar_t> hp{scalar_t(args.beta), scalar_t(args.epsilon_low),
                                           scalar_t(args.epsilon_high), args.old_logps.defined(),
                                           args.ref_logps.defined()};
    const scalar_t* policy = args.logps.data_ptr<scalar_t>();
    const scalar_t* old = hp.has_old ? args.old_logps.data_ptr<scalar_t>() : nullptr;
    const scalar_t* reference = hp.has_reference ? args.ref_logps.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gains = args.advantages.data_ptr<scalar_t>();
    const bool* mask = args.mask.data_ptr<bool>();
    const scalar_t* grad_in = grad.data_ptr<scalar_t>();
    scalar_t* policy_out = grad_policy.data_ptr<scalar_t>();
    scalar_t* old_out = hp.has_old ? grad_old.data_ptr<scalar_t>() : nullptr;
    scalar_t* reference_out = hp.has_reference ? grad_reference.data_ptr<scalar_t>() : nullptr;
    scalar_t* advantage_out = grad_advantages.data_ptr<scalar_t>();

    // One task per sequence, so that the advantage gradient is a plain sum over its tokens.
    const int64_t grain = std::max<int64_t>(1, kGrainSize / std::max<int64_t>(1, num_tokens));
    at::parallel_for(0, num_sequences, grain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        scalar_t advantage_sum = 0;
        for (int64_t i = b * num_tokens; i < (b + 1) * num_tokens; ++i) {
          GrpoTokenGrads<scalar_t> d{0, 0, 0, 0};
          if (mask[i]) {
            d = grpo_token_grad(grad_in[i], policy[i], old ? old[i] : scalar_t(0),
                                reference ? reference[i] : scalar_t(0), gains[b], hp);
          }
          policy_out[i] = d.logp;
          if (old_out) old_out[i] = d.old_logp;
          if (reference_out) reference_out[i] = d.ref_logp;
          advantage_sum += d.advantage;
        }
        advantage_out[b] = advantage_sum;
      }
    });
  });

  std::optional<at::Tensor> grad_old_out;
  std::optional<at::Tensor> grad_reference_out;
  if (grad_old.defined()) grad_old_out = grad_old.to(old_logps->scalar_type());
  if (grad_reference.defined()) grad_reference_out = grad_reference.to(ref_logps->scalar_type());
  return {grad_policy.to(logps.scalar_type()), grad_old_out, grad_reference_out,
          grad_advantages.to(advantages.scalar_type())};
}

}  // namespace pyalign

TORCH_LIBRARY_IMPL(pyalign, CPU, m) {
  m.impl("dpo_loss", &pyalign::dpo_loss_cpu);
  m.impl("dpo_loss_backward", &pyalign::dpo_loss_backward_cpu);
  m.impl("kto_loss", &pyalign::kto_loss_cpu);
  m.impl("kto_loss_backward", &pyalign::kto_loss_backward_cpu);
  m.impl("orpo_loss", &pyalign::orpo_loss_cpu);
  m.impl("orpo_loss_backward", &pyalign::orpo_loss_backward_cpu);
  m.impl("grpo_loss", &pyalign::grpo_loss_cpu);
  m.impl("grpo_loss_backward", &pyalign::grpo_loss_backward_cpu);
}
