// Declarations shared by the device implementations of the preference-loss ops.
//
// losses.cpp defines the schemas and turns each op's arguments into "prepared" tensors: checked,
// converted to the dtype the losses compute in (float64 when a floating-point input is float64,
// float32 otherwise) and made contiguous, with absent optional inputs replaced by neutral
// values. The device files (cpu/losses_cpu.cpp, cuda/losses_cuda.cu) then only loop over
// elements with the formulas of loss_math.h.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "loss_math.h"

namespace pyalign {

struct DpoArguments {
  at::Tensor chosen, rejected;                      // (P,)
  at::Tensor reference_chosen, reference_rejected;  // (P,), zeros for the reference-free types
  at::Tensor chosen_tokens, rejected_tokens;        // (P,), clamped to >= 1; ones when unused
  loss_math::DpoLossType type;
  double beta, label_smoothing, gamma;
};

DpoArguments prepare_dpo_arguments(const char* op_name, const at::Tensor& chosen,
                                   const at::Tensor& rejected,
                                   const std::optional<at::Tensor>& reference_chosen,
                                   const std::optional<at::Tensor>& reference_rejected,
                                   const std::optional<at::Tensor>& chosen_tokens,
                                   const std::optional<at::Tensor>& rejected_tokens,
                                   const std::string& loss_type, double beta,
                                   double label_smoothing, double gamma);

struct KtoArguments {
  at::Tensor policy, reference;  // (B,)
  at::Tensor labels;             // (B,) bool
  at::Tensor kl;                 // 0-d
  double beta, desirable_weight, undesirable_weight;
};

KtoArguments prepare_kto_arguments(const char* op_name, const at::Tensor& policy_logps,
                                   const at::Tensor& reference_logps, const at::Tensor& labels,
                                   const at::Tensor& kl, double beta, double desirable_weight,
                                   double undesirable_weight);

struct OrpoArguments {
  at::Tensor chosen, rejected;                // (P,)
  at::Tensor chosen_tokens, rejected_tokens;  // (P,), clamped to >= 1
  double beta;
};

OrpoArguments prepare_orpo_arguments(const char* op_name, const at::Tensor& chosen,
                                     const at::Tensor& rejected, const at::Tensor& chosen_tokens,
                                     const at::Tensor& rejected_tokens, double beta);

struct GrpoArguments {
  at::Tensor logps;       // (B, T)
  at::Tensor old_logps;   // (B, T), undefined when absent
  at::Tensor ref_logps;   // (B, T), undefined when absent
  at::Tensor advantages;  // (B,)
  at::Tensor mask;        // (B, T) bool
  double beta, epsilon_low, epsilon_high;
};

GrpoArguments prepare_grpo_arguments(const char* op_name, const at::Tensor& logps,
                                     const std::optional<at::Tensor>& old_logps,
                                     const std::optional<at::Tensor>& ref_logps,
                                     const at::Tensor& advantages,
                                     const at::Tensor& completion_mask, double beta,
                                     double epsilon_low, double epsilon_high);

// Checks that an incoming gradient has the shape of the op output it belongs to and returns it
// in `dtype`, contiguous.
at::Tensor prepare_grad(const char* op_name, const at::Tensor& grad, at::IntArrayRef shape,
                        at::ScalarType dtype);

}  // namespace pyalign
