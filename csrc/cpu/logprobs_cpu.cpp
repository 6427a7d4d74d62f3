// CPU kernels of pyalign::fused_linear_logprobs and its backward.
//
// Both ops walk the tokens in chunks of chunk_size rows. Within a chunk, the LM head is applied
// in vocabulary blocks. A weight that already has the accumulator dtype forms one block. A
// lower-precision weight is split into blocks of kVocabBlock rows, each converted to the
// accumulator dtype just before its matrix product. The products go through ATen (at::mm and
// at::addmm, so the BLAS torch was built with), and at::parallel_for splits the per-row softmax
// work across torch's intra-op thread pool, whose size is at::get_num_threads().
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>

#include "../logprobs.h"

namespace pyalign {
namespace {

// Rows of a low-precision LM head converted to the accumulator dtype at a time. Converting
// them once per token chunk costs about 1/chunk_size of the block's matrix product and
// avoids a float32 copy of the whole (V, H) weight.
constexpr int64_t kVocabBlock = 4096;

int64_t vocab_block_size(const at::Tensor& weight, at::ScalarType acc_dtype) {
  const int64_t vocab_size = weight.size(0);
  return weight.scalar_type() == acc_dtype ? vocab_size : std::min(kVocabBlock, vocab_size);
}

void check_targets_in_range(const char* op_name, const at::Tensor& targets, int64_t vocab_size) {
  const int64_t* ids = targets.data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    TORCH_CHECK_VALUE(ids[i] >= 0 && ids[i] < vocab_size, op_name, ": targets[", i, "] = ", ids[i],
                      " is outside the vocabulary [0, ", vocab_size, ")");
  }
}

// Returns a (rows, width) contiguous view on the front of a flat scratch buffer.
at::Tensor scratch_matrix(const at::Tensor& buffer, int64_t rows, int64_t width) {
  return buffer.narrow(0, 0, rows * width).view({rows, width});
}

// Writes hidden_acc @ weight_block.T + bias_block into out (rows, width).
void block_logits(at::Tensor& out, const at::Tensor& hidden_acc, const at::Tensor& weight_block,
                  const std::optional<at::Tensor>& bias_acc, int64_t vocab_start) {
  if (bias_acc.has_value()) {
    const at::Tensor bias_block = bias_acc->narrow(0, vocab_start, out.size(1));
    at::addmm_out(out, bias_block, hidden_acc, weight_block.t());
  } else {
    at::mm_out(out, hidden_acc, weight_block.t());
  }
}

int64_t row_grain_size(int64_t width) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, width));
}

// Folds one vocabulary block of logits (rows, width) into a running logsumexp per row, kept as
// a maximum and a sum of exp(logit - maximum), and copies each row's target logit when the
// target falls inside the block.
template <typename scalar_t>
void accumulate_logsumexp(const scalar_t* logits, int64_t rows, int64_t width, int64_t vocab_start,
                          const int64_t* targets, scalar_t* row_max, scalar_t* row_sum,
                          scalar_t* target_logits) {
  at::parallel_for(0, rows, row_grain_size(width), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* row = logits + i * width;
      scalar_t block_max = -std::numeric_limits<scalar_t>::infinity();
      for (int64_t j = 0; j < width; ++j) {
        block_max = std::max(block_max, row[j]);
      }
      const scalar_t new_max = std::max(row_max[i], block_max);
      scalar_t block_sum = 0;
      for (int64_t j = 0; j < width; ++j) {
        block_sum += std::exp(row[j] - new_max);
      }
      // The first block starts from row_sum = 0 and row_max = -inf, where exp(-inf - new_max)
      // is 0 as long as new_max is finite.
      const scalar_t rescale = row_sum[i] == 0 ? scalar_t(0) : std::exp(row_max[i] - new_max);
      row_sum[i] = row_sum[i] * rescale + block_sum;
      row_max[i] = new_max;

      const int64_t local_target = targets[i] - vocab_start;
      if (local_target >= 0 && local_target < width) {
        target_logits[i] = row[local_target];
      }
    }
  });
}

// Replaces one vocabulary block of logits (rows, width) in place with the gradient of the loss
// with respect to them: grad_i * (onehot(target_i) - exp(logits_i - logsumexp_i)).
template <typename scalar_t>
void logits_to_grad(scalar_t* logits, int64_t rows, int64_t width, int64_t vocab_start,
                    const int64_t* targets, const scalar_t* logsumexp,
                    const scalar_t* grad_token_logps) {
  at::parallel_for(0, rows, row_grain_size(width), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* row = logits + i * width;
      const scalar_t grad = grad_token_logps[i];
      const scalar_t lse = logsumexp[i];
      for (int64_t j = 0; j < width; ++j) {
        row[j] = -grad * std::exp(row[j] - lse);
      }
      const int64_t local_target = targets[i] - vocab_start;
      if (local_target >= 0 && local_target < width) {
        row[local_target] += grad;
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> fused_linear_logprobs_cpu(const at::Tensor& hidden,
                                                             const at::Tensor& weight,
                                                             const std::optional<at::Tensor>& bias,
                                                             const at::Tensor& targets,
                                                             int64_t chunk_size) {
  constexpr const char* op_name = "fused_linear_logprobs";
  check_logprobs_arguments(op_name, hidden, weight, bias, targets, chunk_size);
  const at::Tensor targets_contig = targets.contiguous();
  check_targets_in_range(op_name, targets_contig, weight.size(0));

  const at::ScalarType acc_dtype = accumulate_dtype(hidden, weight);
  const auto acc_options = hidden.options().dtype(acc_dtype);
  const int64_t num_tokens = hidden.size(0);
  const int64_t vocab_size = weight.size(0);
  const int64_t block_size = vocab_block_size(weight, acc_dtype);
  const at::Tensor hidden_contig = hidden.contiguous();
  const at::Tensor weight_contig = weight.contiguous();
  std::optional<at::Tensor> bias_acc;
  if (bias.has_value()) {
    bias_acc = bias->to(acc_dtype).contiguous();  // (V,)
  }

  at::Tensor token_logps = at::empty({num_tokens}, acc_options);  // (N,)
  at::Tensor logsumexp = at::empty({num_tokens}, acc_options);    // (N,)
  at::Tensor row_sum = at::empty({num_tokens}, acc_options);      // (N,)
  const int64_t max_rows = std::min(chunk_size, num_tokens);
  at::Tensor logits_buffer = at::empty({max_rows * block_size}, acc_options);  // (chunk x block)

  // logsumexp holds the running row maximum until the last block is folded in.
  logsumexp.fill_(-std::numeric_limits<double>::infinity());
  row_sum.zero_();

  for (int64_t start = 0; start < num_tokens; start += chunk_size) {
    const int64_t rows = std::min(chunk_size, num_tokens - start);
    const at::Tensor hidden_acc = hidden_contig.narrow(0, start, rows).to(acc_dtype);  // (C, H)

    for (int64_t vocab_start = 0; vocab_start < vocab_size; vocab_start += block_size) {
      const int64_t width = std::min(block_size, vocab_size - vocab_start);
      const at::Tensor weight_block =
          weight_contig.narrow(0, vocab_start, width).to(acc_dtype);   // (block, H)
      at::Tensor logits = scratch_matrix(logits_buffer, rows, width);  // (C, block)
      block_logits(logits, hidden_acc, weight_block, bias_acc, vocab_start);

      AT_DISPATCH_FLOATING_TYPES(acc_dtype, "fused_linear_logprobs_cpu", [&] {
        accumulate_logsumexp<scalar_t>(
            logits.data_ptr<scalar_t>(), rows, width, vocab_start,
            targets_contig.data_ptr<int64_t>() + start, logsumexp.data_ptr<scalar_t>() + start,
            row_sum.data_ptr<scalar_t>() + start, token_logps.data_ptr<scalar_t>() + start);
      });
    }
  }

  // Until now token_logps held the target logits and logsumexp the row maxima.
  logsumexp.add_(row_sum.log_());
  token_logps.sub_(logsumexp);
  return {token_logps, logsumexp};
}

std::tuple<at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>>
fused_linear_logprobs_backward_cpu(const at::Tensor& grad_token_logps, const at::Tensor& hidden,
                                   const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                   const at::Tensor& targets, const at::Tensor& logsumexp,
                                   int64_t chunk_size, bool needs_weight_grad) {
  constexpr const char* op_name = "fused_linear_logprobs_backward";
  check_logprobs_arguments(op_name, hidden, weight, bias, targets, chunk_size);
  check_backward_arguments(grad_token_logps, hidden, logsumexp);
  const at::Tensor targets_contig = targets.contiguous();
  check_targets_in_range(op_name, targets_contig, weight.size(0));

  const at::ScalarType acc_dtype = accumulate_dtype(hidden, weight);
  const auto acc_options = hidden.options().dtype(acc_dtype);
  const int64_t num_tokens = hidden.size(0);
  const int64_t hidden_size = hidden.size(1);
  const int64_t vocab_size = weight.size(0);
  const int64_t block_size = vocab_block_size(weight, acc_dtype);
  const at::Tensor hidden_contig = hidden.contiguous();
  const at::Tensor weight_contig = weight.contiguous();
  // The incoming gradient is often an expanded view (the backward of a sum), so copy it.
  const at::Tensor grad_acc = grad_token_logps.to(acc_dtype).contiguous();  // (N,)
  const at::Tensor logsumexp_acc = logsumexp.to(acc_dtype).contiguous();    // (N,)
  std::optional<at::Tensor> bias_acc;
  if (bias.has_value()) {
    bias_acc = bias->to(acc_dtype).contiguous();  // (V,)
  }

  // The LM head gradients are accumulated over all chunks in the accumulator dtype, so a
  // bfloat16 head costs a float32 (V, H) buffer here. They are skipped entirely for a frozen
  // head.
  at::Tensor grad_hidden = at::empty({num_tokens, hidden_size}, hidden.options());  // (N, H)
  at::Tensor grad_weight_acc;
  at::Tensor grad_bias_acc;
  if (needs_weight_grad) {
    grad_weight_acc = at::zeros({vocab_size, hidden_size}, acc_options);  // (V, H)
    if (bias.has_value()) {
      grad_bias_acc = at::zeros({vocab_size}, acc_options);  // (V,)
    }
  }
  const int64_t max_rows = std::min(chunk_size, num_tokens);
  at::Tensor logits_buffer = at::empty({max_rows * block_size}, acc_options);  // (chunk x block)
  at::Tensor grad_hidden_buffer = at::empty({max_rows, hidden_size}, acc_options);  // (chunk, H)

  for (int64_t start = 0; start < num_tokens; start += chunk_size) {
    const int64_t rows = std::min(chunk_size, num_tokens - start);
    const at::Tensor hidden_acc = hidden_contig.narrow(0, start, rows).to(acc_dtype);  // (C, H)
    at::Tensor grad_hidden_acc = grad_hidden_buffer.narrow(0, 0, rows).zero_();        // (C, H)

    for (int64_t vocab_start = 0; vocab_start < vocab_size; vocab_start += block_size) {
      const int64_t width = std::min(block_size, vocab_size - vocab_start);
      const at::Tensor weight_block =
          weight_contig.narrow(0, vocab_start, width).to(acc_dtype);  // (block, H)

      // Recompute the block's logits, then turn them into d loss / d logits in place.
      at::Tensor grad_logits = scratch_matrix(logits_buffer, rows, width);  // (C, block)
      block_logits(grad_logits, hidden_acc, weight_block, bias_acc, vocab_start);
      AT_DISPATCH_FLOATING_TYPES(acc_dtype, "fused_linear_logprobs_backward_cpu", [&] {
        logits_to_grad<scalar_t>(grad_logits.data_ptr<scalar_t>(), rows, width, vocab_start,
                                 targets_contig.data_ptr<int64_t>() + start,
                                 logsumexp_acc.data_ptr<scalar_t>() + start,
                                 grad_acc.data_ptr<scalar_t>() + start);
      });

      grad_hidden_acc.addmm_(grad_logits, weight_block);
      if (needs_weight_grad) {
        grad_weight_acc.narrow(0, vocab_start, width).addmm_(grad_logits.t(), hidden_acc);
        if (bias.has_value()) {
          grad_bias_acc.narrow(0, vocab_start, width).add_(grad_logits.sum(0));
        }
      }
    }
    grad_hidden.narrow(0, start, rows).copy_(grad_hidden_acc);
  }

  std::optional<at::Tensor> grad_weight;
  std::optional<at::Tensor> grad_bias;
  if (needs_weight_grad) {
    grad_weight = grad_weight_acc.to(weight.scalar_type());
    if (bias.has_value()) {
      grad_bias = grad_bias_acc.to(bias->scalar_type());
    }
  }
  return {grad_hidden, grad_weight, grad_bias};
}

}  // namespace pyalign

TORCH_LIBRARY_IMPL(pyalign, CPU, m) {
  m.impl("fused_linear_logprobs", &pyalign::fused_linear_logprobs_cpu);
  m.impl("fused_linear_logprobs_backward", &pyalign::fused_linear_logprobs_backward_cpu);
}
