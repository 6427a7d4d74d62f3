// Per-element formulas of the preference losses and their derivatives, shared by the CPU and
// CUDA kernels (every function is C10_HOST_DEVICE). scalar_t is float or double.
//
// The formulas are documented with the Python functions in pyalign/losses/; the derivatives are
// derived next to each function. Where a subgradient must be picked (relu at 0, min at a tie,
// clamp at its bound), the choice matches the plain-PyTorch twins in pyalign/ops/reference.py.
// relu and min follow autograd. A clamp passes the gradient at its bound, and the twins write
// their clamps with torch.where, because torch.clamp's choice at the bound is not documented.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace pyalign {
namespace loss_math {

enum class DpoLossType : int64_t { kSigmoid = 0, kRobust, kHinge, kIpo, kSimpo, kCpo };

// exp(ref - logp) in the GRPO KL estimator is evaluated at min(ref - logp, this).
constexpr double kGrpoKlMaxExponent = 20.0;
// ORPO clamps average log-probabilities to at most this value, where the log odds are finite.
constexpr double kOrpoMaxAverageLogp = -1e-6;

inline constexpr bool uses_reference(DpoLossType type) {
  return type != DpoLossType::kSimpo && type != DpoLossType::kCpo;
}

inline constexpr bool is_length_normalised(DpoLossType type) {
  return type == DpoLossType::kIpo || type == DpoLossType::kSimpo;
}

template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t sigmoid(scalar_t x) {
  // Evaluated on the side where exp cannot overflow.
  if (x >= scalar_t(0)) {
    return scalar_t(1) / (scalar_t(1) + std::exp(-x));
  }
  const scalar_t e = std::exp(x);
  return e / (scalar_t(1) + e);
}

// log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)), finite for every finite x.
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t log_sigmoid(scalar_t x) {
  const scalar_t negative_part = x < scalar_t(0) ? x : scalar_t(0);
  return negative_part - std::log1p(std::exp(-std::fabs(x)));
}

// log(1 - exp(x)) for x < 0, in the branch that is accurate for x (switching at -log 2).
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t log1mexp(scalar_t x) {
  const scalar_t switch_point = scalar_t(-0.6931471805599453);
  return x < switch_point ? std::log1p(-std::exp(x)) : std::log(-std::expm1(x));
}

// DPO family, one pair.

template <typename scalar_t>
struct DpoPairInputs {
  scalar_t chosen, rejected;                      // policy sums
  scalar_t reference_chosen, reference_rejected;  // 0 for the reference-free types
  scalar_t chosen_tokens, rejected_tokens;        // at least 1; 1 when not length-normalised
};

template <typename scalar_t>
struct DpoHyperparameters {
  DpoLossType type;
  scalar_t beta, label_smoothing, gamma;
};

// The scores whose beta-scaled difference is the margin: log-ratios (per token for ipo) or, for
// the reference-free types, the policy's log-probabilities (per token for simpo).
template <typename scalar_t>
C10_HOST_DEVICE inline void dpo_scores(const DpoPairInputs<scalar_t>& in, DpoLossType type,
                                       scalar_t* chosen_score, scalar_t* rejected_score) {
  scalar_t chosen = in.chosen - in.reference_chosen;
  scalar_t rejected = in.rejected - in.reference_rejected;
  if (is_length_normalised(type)) {
    chosen /= in.chosen_tokens;
    rejected /= in.rejected_tokens;
  }
  *chosen_score = chosen;
  *rejected_score = rejected;
}

// Returns the pair's loss; writes the rewards beta * score (summed log-ratios for ipo, as TRL
// logs them).
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t dpo_pair_loss(const DpoPairInputs<scalar_t>& in,
                                              const DpoHyperparameters<scalar_t>& hp,
                                              scalar_t* chosen_reward, scalar_t* rejected_reward) {
  scalar_t chosen_score, rejected_score;
  dpo_scores(in, hp.type, &chosen_score, &rejected_score);
  const scalar_t eps = hp.label_smoothing;
  const scalar_t z = hp.beta * (chosen_score - rejected_score);

  scalar_t loss;
  switch (hp.type) {
    case DpoLossType::kRobust:
      loss = (-(1 - eps) * log_sigmoid(z) + eps * log_sigmoid(-z)) / (1 - 2 * eps);
      break;
    case DpoLossType::kHinge:
      loss = z < scalar_t(1) ? scalar_t(1) - z : scalar_t(0);
      break;
    case DpoLossType::kIpo: {
      const scalar_t error = chosen_score - rejected_score - 1 / (2 * hp.beta);
      loss = error * error;
      break;
    }
    case DpoLossType::kSimpo:
      loss = -(1 - eps) * log_sigmoid(z - hp.gamma) - eps * log_sigmoid(hp.gamma - z);
      break;
    default:  // kSigmoid, kCpo
      loss = -(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
      break;
  }

  if (hp.type == DpoLossType::kIpo) {
    chosen_score = in.chosen - in.reference_chosen;
    rejected_score = in.rejected - in.reference_rejected;
  }
  *chosen_reward = hp.beta * chosen_score;
  *rejected_reward = hp.beta * rejected_score;
  return loss;
}

// Writes d loss / d chosen and d loss / d rejected for the policy sums. The reference sums
// enter as (policy - reference), so their derivatives are the negatives of these.
//
// With z = beta (s_c - s_r) and f the loss as a function of z:
//   sigmoid, cpo: f' = -(1 - eps) sigmoid(-z) + eps sigmoid(z)
//   simpo:        the same at z - gamma
//   robust:       f' = (-(1 - eps) sigmoid(-z) - eps sigmoid(z)) / (1 - 2 eps)
//   hinge:        f' = -1 where 1 - z > 0, else 0 (relu'(0) = 0, as in PyTorch)
// so d loss / d s_c = beta f' = -d loss / d s_r. For ipo, d loss / d s_c = 2 (s_c - s_r -
// 1 / (2 beta)). A length-normalised score s = sum / tokens adds the factor 1 / tokens.
template <typename scalar_t>
C10_HOST_DEVICE inline void dpo_pair_grad(const DpoPairInputs<scalar_t>& in,
                                          const DpoHyperparameters<scalar_t>& hp,
                                          scalar_t* grad_chosen, scalar_t* grad_rejected) {
  scalar_t chosen_score, rejected_score;
  dpo_scores(in, hp.type, &chosen_score, &rejected_score);
  const scalar_t eps = hp.label_smoothing;
  const scalar_t z = hp.beta * (chosen_score - rejected_score);

  scalar_t grad_score;  // d loss / d s_c
  switch (hp.type) {
    case DpoLossType::kRobust:
      grad_score = hp.beta * (-(1 - eps) * sigmoid(-z) - eps * sigmoid(z)) / (1 - 2 * eps);
      break;
    case DpoLossType::kHinge:
      grad_score = z < scalar_t(1) ? -hp.beta : scalar_t(0);
      break;
    case DpoLossType::kIpo:
      grad_score = 2 * (chosen_score - rejected_score - 1 / (2 * hp.beta));
      break;
    case DpoLossType::kSimpo:
      grad_score = hp.beta * (-(1 - eps) * sigmoid(hp.gamma - z) + eps * sigmoid(z - hp.gamma));
      break;
    default:  // kSigmoid, kCpo
      grad_score = hp.beta * (-(1 - eps) * sigmoid(-z) + eps * sigmoid(z));
      break;
  }

  scalar_t chosen_scale = 1;
  scalar_t rejected_scale = 1;
  if (is_length_normalised(hp.type)) {
    chosen_scale = 1 / in.chosen_tokens;
    rejected_scale = 1 / in.rejected_tokens;
  }
  *grad_chosen = grad_score * chosen_scale;
  *grad_rejected = -grad_score * rejected_scale;
}

// KTO, one row. With r = policy - reference:
//   desirable:   loss = w_D (1 - sigmoid(u)),  u = beta (r - kl)
//   undesirable: loss = w_U (1 - sigmoid(v)),  v = beta (kl - r)
// and d(1 - sigmoid(x))/dx = -sigmoid(x) (1 - sigmoid(x)).

template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t kto_row_loss(scalar_t policy, scalar_t reference, bool desirable,
                                             scalar_t kl, scalar_t beta, scalar_t desirable_weight,
                                             scalar_t undesirable_weight, scalar_t* reward) {
  const scalar_t logratio = policy - reference;
  *reward = beta * logratio;
  if (desirable) {
    return desirable_weight * (1 - sigmoid(beta * (logratio - kl)));
  }
  return undesirable_weight * (1 - sigmoid(beta * (kl - logratio)));
}

// Writes d loss / d policy and d loss / d kl; d loss / d reference = -d loss / d policy.
template <typename scalar_t>
C10_HOST_DEVICE inline void kto_row_grad(scalar_t policy, scalar_t reference, bool desirable,
                                         scalar_t kl, scalar_t beta, scalar_t desirable_weight,
                                         scalar_t undesirable_weight, scalar_t* grad_policy,
                                         scalar_t* grad_kl) {
  const scalar_t logratio = policy - reference;
  if (desirable) {
    const scalar_t s = sigmoid(beta * (logratio - kl));
    const scalar_t grad_u = -desirable_weight * s * (1 - s);
    *grad_policy = beta * grad_u;
    *grad_kl = -beta * grad_u;
  } else {
    const scalar_t s = sigmoid(beta * (kl - logratio));
    const scalar_t grad_v = -undesirable_weight * s * (1 - s);
    *grad_policy = -beta * grad_v;
    *grad_kl = beta * grad_v;
  }
}

// ORPO, one pair. With the clamped averages a = min(sum / tokens, kOrpoMaxAverageLogp):
//   L = (a_c - a_r) - (log1mexp(a_c) - log1mexp(a_r)),  loss = -beta log sigmoid(L)
// d L / d a_c = 1 + exp(a_c) / (1 - exp(a_c)) = -1 / expm1(a_c), d L / d a_r = 1 / expm1(a_r),
// d loss / d L = -beta sigmoid(-L), and the clamp passes the gradient where sum / tokens is at
// most its bound (inclusive).

template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t orpo_clamped_average(scalar_t sum, scalar_t tokens) {
  const scalar_t average = sum / tokens;
  const scalar_t bound = scalar_t(kOrpoMaxAverageLogp);
  return average <= bound ? average : bound;
}

template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t orpo_log_odds(scalar_t chosen_average, scalar_t rejected_average) {
  return (chosen_average - rejected_average) -
         (log1mexp(chosen_average) - log1mexp(rejected_average));
}

template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t orpo_pair_loss(scalar_t chosen, scalar_t rejected,
                                               scalar_t chosen_tokens, scalar_t rejected_tokens,
                                               scalar_t beta, scalar_t* log_odds) {
  const scalar_t chosen_average = orpo_clamped_average(chosen, chosen_tokens);
  const scalar_t rejected_average = orpo_clamped_average(rejected, rejected_tokens);
  *log_odds = orpo_log_odds(chosen_average, rejected_average);
  return -beta * log_sigmoid(*log_odds);
}

template <typename scalar_t>
C10_HOST_DEVICE inline void orpo_pair_grad(scalar_t chosen, scalar_t rejected,
                                           scalar_t chosen_tokens, scalar_t rejected_tokens,
                                           scalar_t beta, scalar_t* grad_chosen,
                                           scalar_t* grad_rejected) {
  const scalar_t bound = scalar_t(kOrpoMaxAverageLogp);
  const scalar_t chosen_average = orpo_clamped_average(chosen, chosen_tokens);
  const scalar_t rejected_average = orpo_clamped_average(rejected, rejected_tokens);
  const scalar_t log_odds = orpo_log_odds(chosen_average, rejected_average);
  const scalar_t grad_log_odds = -beta * sigmoid(-log_odds);

  const bool chosen_passes = chosen / chosen_tokens <= bound;
  const bool rejected_passes = rejected / rejected_tokens <= bound;
  *grad_chosen =
      chosen_passes ? grad_log_odds * (-1 / std::expm1(chosen_average)) / chosen_tokens : 0;
  *grad_rejected =
      rejected_passes ? grad_log_odds * (1 / std::expm1(rejected_average)) / rejected_tokens : 0;
}

// GRPO, one completion token. See pyalign/losses/grpo.py for the formulas.

template <typename scalar_t>
struct GrpoHyperparameters {
  scalar_t beta, epsilon_low, epsilon_high;
  bool has_old, has_reference;
};

template <typename scalar_t>
struct GrpoTokenOutputs {
  scalar_t loss, kl;
  bool low_clipped, high_clipped;
};

template <typename scalar_t>
C10_HOST_DEVICE inline GrpoTokenOutputs<scalar_t> grpo_token_loss(
    scalar_t logp, scalar_t old_logp, scalar_t ref_logp, scalar_t advantage,
    const GrpoHyperparameters<scalar_t>& hp) {
  const scalar_t ratio = hp.has_old ? std::exp(logp - old_logp) : scalar_t(1);
  const scalar_t lower = 1 - hp.epsilon_low;
  const scalar_t upper = 1 + hp.epsilon_high;
  const scalar_t clipped_ratio = ratio < lower ? lower : (ratio > upper ? upper : ratio);
  const scalar_t unclipped_term = ratio * advantage;
  const scalar_t clipped_term = clipped_ratio * advantage;

  GrpoTokenOutputs<scalar_t> out;
  out.loss = -(unclipped_term < clipped_term ? unclipped_term : clipped_term);
  out.kl = 0;
  if (hp.has_reference) {
    const scalar_t log_ratio = ref_logp - logp;
    const scalar_t max_exponent = scalar_t(kGrpoKlMaxExponent);
    const scalar_t exponent = log_ratio <= max_exponent ? log_ratio : max_exponent;
    out.kl = std::exp(exponent) - log_ratio - 1;
    out.loss += hp.beta * out.kl;
  }
  out.low_clipped = ratio < lower && advantage < 0;
  out.high_clipped = ratio > upper && advantage > 0;
  return out;
}

template <typename scalar_t>
struct GrpoTokenGrads {
  scalar_t logp, old_logp, ref_logp, advantage;
};

// Derivatives of one token's loss for an incoming gradient `grad`.
//
// -min(c A, c' A) picks c A unless the clip binds: c > 1 + epsilon_high with A > 0, or
// c < 1 - epsilon_low with A < 0, where c' is constant. At a tie (c inside the clip range, or
// A = 0) torch.min splits the gradient evenly between both terms, and c' = c passes the
// gradient inside the range (bounds included), which adds up to the unclipped derivative for
// c and to -(c + c') / 2 for A. With c = exp(logp - old): dc/dlogp = c = -dc/dold, or
// dc/dlogp = 1 when old is logp itself, detached. The KL term, with d = ref - logp and the capped
// exponent e = exp(d) where d <= kGrpoKlMaxExponent and 0 beyond: dk3/dref = e - 1 = -dk3/dlogp.
template <typename scalar_t>
C10_HOST_DEVICE inline GrpoTokenGrads<scalar_t> grpo_token_grad(
    scalar_t grad, scalar_t logp, scalar_t old_logp, scalar_t ref_logp, scalar_t advantage,
    const GrpoHyperparameters<scalar_t>& hp) {
  const scalar_t ratio = hp.has_old ? std::exp(logp - old_logp) : scalar_t(1);
  const scalar_t ratio_grad = hp.has_old ? ratio : scalar_t(1);  // dc / dlogp
  const scalar_t lower = 1 - hp.epsilon_low;
  const scalar_t upper = 1 + hp.epsilon_high;
  const scalar_t clipped_ratio = ratio < lower ? lower : (ratio > upper ? upper : ratio);
  const bool clip_binds = (advantage > 0 && ratio > upper) || (advantage < 0 && ratio < lower);

  GrpoTokenGrads<scalar_t> out;
  const scalar_t grad_ratio = clip_binds ? scalar_t(0) : -advantage;  // d loss / dc
  // Where the clip binds no gradient reaches c, which may then be inf (logp - old above 88.7 in
  // float32), so the product is not formed: 0 * inf would be NaN.
  out.logp = clip_binds ? scalar_t(0) : grad * grad_ratio * ratio_grad;
  out.old_logp = hp.has_old && !clip_binds ? -grad * grad_ratio * ratio : scalar_t(0);
  if (advantage == 0) {
    out.advantage = -grad * (ratio + clipped_ratio) / 2;
  } else {
    out.advantage = -grad * (clip_binds ? clipped_ratio : ratio);
  }

  out.ref_logp = 0;
  if (hp.has_reference) {
    const scalar_t log_ratio = ref_logp - logp;
    const scalar_t exp_term =
        log_ratio <= scalar_t(kGrpoKlMaxExponent) ? std::exp(log_ratio) : scalar_t(0);
    const scalar_t grad_kl_ref = exp_term - 1;
    out.ref_logp = grad * hp.beta * grad_kl_ref;
    out.logp -= grad * hp.beta * grad_kl_ref;
  }
  return out;
}

}  // namespace loss_math
}  // namespace pyalign
