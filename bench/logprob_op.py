"""Benchmark the fused log-probability op against the usual ways of scoring tokens for DPO.

Each case runs forward and backward of a DPO sigmoid loss, ``-log sigmoid(beta (pi_c - pi_r))``
with the reference log-probabilities held at 0, on N scored tokens split into P chosen/rejected
pairs, from (2P, N / 2P, H) hidden states and a (V, H) LM head, frozen or trainable:

- ``naive``: full (N, V) float32 logits, ``log_softmax``, ``gather``;
- ``trl``: full logits, then TRL's ``selective_log_softmax`` (a logsumexp per sequence);
- ``liger``: Liger-Kernel's ``LigerFusedLinearDPOLoss``, which computes the gradients chunk by
  chunk of pairs during the forward pass (eager, ``compiled=False``);
- ``pyalign``: ``pyalign.ops.sequence_logprobs`` (the fused C++ op) and ``pyalign.losses``.

Every case runs in a fresh Python process, so that its peak memory is its own. Peak extra
memory is, on CPU, the growth of the process's peak resident set size (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the measured step) over the resident size at that moment,
and on CUDA the growth of ``torch.cuda.max_memory_allocated``; both minus the bytes of the
inputs' gradients (``hidden.grad``, ``weight.grad``), which every method must produce. That
subtraction assumes the gradients are alive at the peak; a method that peaks before its head
gradient exists (the naive ones do, in the log-softmax backward) is understated by up to V x H
values with a trainable head. The JSON lines keep the raw growth too. The first step is
measured for memory (after a small warm-up of the same method on 16 tokens), one case at a
time. The ``--repeats`` timed steps then run round-robin over the methods of one (N, P, head),
each process waiting while another runs, so that changing load on a shared machine affects
every method alike. The median is reported. Effective TFLOP/s counts
8 N H V floating-point operations per step (four N x H x V matrix products).

CPU, the project's reference sizes (Qwen2-0.5B's head)::

    python bench/logprob_op.py --tokens 512 2048 --pairs 1 8 --head frozen trainable

GPU, bfloat16, Llama-3-8B's head::

    python bench/logprob_op.py --device cuda --dtype bfloat16 --hidden 4096 --vocab 128256 \\
        --tokens 4096 8192 16384

Prints one table row and one JSON line per case. Needs ``trl`` and ``liger-kernel`` for those
methods (``pip install -e '.[bench]'``); a method whose package is missing is reported as
skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("naive", "trl", "liger", "pyalign")
REQUIRED_PACKAGES = {"trl": "trl", "liger": "liger_kernel"}
BETA = 0.1
WARM_UP_TOKENS = 16


# One case, in its own process


def make_inputs(config, tokens, torch):
    """Return (hidden_states, weight, input_ids, label_mask) for `tokens` scored tokens."""
    device = torch.device(config["device"])
    dtype = getattr(torch, config["dtype"])
    sequences = 2 * config["pairs"]
    length = tokens // sequences
    hidden_size, vocab_size = config["hidden"], config["vocab"]

    # In-place initialisation, so that no temporary raises the memory baseline.
    weight = torch.empty(vocab_size, hidden_size, device=device, dtype=dtype).normal_(0, 0.02)
    weight.requires_grad_(config["head"] == "trainable")  # (V, H)
    # Position t - 1 predicts token t, so each sequence has one extra leading position.
    hidden_states = torch.empty(sequences, length + 1, hidden_size, device=device, dtype=dtype)
    hidden_states.normal_().requires_grad_(True)  # (2P, T + 1, H)
    input_ids = torch.randint(0, vocab_size, (sequences, length + 1), device=device)
    label_mask = torch.ones(sequences, length + 1, dtype=torch.bool, device=device)
    label_mask[:, 0] = False
    return hidden_states, weight, input_ids, label_mask


def dpo_from_sums(sums, torch):
    num_pairs = sums.shape[0] // 2
    margin = BETA * (sums[:num_pairs] - sums[num_pairs:])
    return -torch.nn.functional.logsigmoid(margin).mean()


def step_naive(hidden_states, weight, input_ids, label_mask, torch):
    sequences, length = input_ids.shape[0], input_ids.shape[1] - 1
    hidden = hidden_states[:, :-1].reshape(-1, hidden_states.shape[-1])  # (N, H)
    logits = (hidden @ weight.T).float()  # (N, V)
    logps = logits.log_softmax(dim=-1)  # (N, V)
    targets = input_ids[:, 1:].reshape(-1, 1)
    token_logps = logps.gather(-1, targets).view(sequences, length)
    return dpo_from_sums(token_logps.sum(dim=1), torch)


def step_trl(hidden_states, weight, input_ids, label_mask, torch):
    from trl.trainer.utils import selective_log_softmax

    logits = (hidden_states[:, :-1] @ weight.T).float()  # (2P, T, V)
    token_logps = selective_log_softmax(logits, input_ids[:, 1:])  # (2P, T)
    return dpo_from_sums(token_logps.sum(dim=1), torch)


def make_step_liger(torch):
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

    loss_module = LigerFusedLinearDPOLoss(beta=BETA, use_ref_model=False, compiled=False)

    def step(hidden_states, weight, input_ids, label_mask, torch):
        return loss_module(weight, hidden_states[:, :-1], input_ids[:, 1:])[0]

    return step


def make_step_pyalign(torch):
    from pyalign import ops
    from pyalign.losses import PreferenceLogps, dpo_loss

    ops.load_native_ops()

    def step(hidden_states, weight, input_ids, label_mask, torch):
        result = ops.sequence_logprobs(hidden_states, weight, None, input_ids, label_mask)
        policy = PreferenceLogps.from_concatenated(result.sum, result.count)
        zeros = torch.zeros_like(policy.chosen)
        loss, _ = dpo_loss(policy, PreferenceLogps(zeros, zeros), beta=BETA)
        return loss

    return step


def select_step(method, torch):
    if method == "naive":
        return step_naive
    if method == "trl":
        return step_trl
    if method == "liger":
        return make_step_liger(torch)
    return make_step_pyalign(torch)


class MemoryMeter:
    """Peak memory growth of one step, on CPU from the kernel's counters, on CUDA from torch's."""

    def __init__(self, device, torch):
        self.device = device
        self.torch = torch

    def start(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.baseline = self.torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.baseline = _status_bytes("VmRSS")

    def peak_growth(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() - self.baseline
        return _status_bytes("VmHWM") - self.baseline


def _status_bytes(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def serve_case(config):
    """Set up one case, then answer the parent's commands on stdin, one JSON line each.

    ``memory`` runs the measured first step and returns its loss and peak memory, ``step`` runs
    one timed step and returns its time, and ``quit`` ends the process.
    """
    import torch

    torch.manual_seed(0)
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    step = select_step(config["method"], torch)
    synchronize = torch.cuda.synchronize if config["device"] == "cuda" else (lambda: None)

    def run(inputs):
        hidden_states, weight = inputs[0], inputs[1]
        hidden_states.grad = None
        weight.grad = None
        loss = step(*inputs, torch)
        loss.backward()
        synchronize()
        return loss

    # Warm-up on a few tokens: loads libraries and thread pools outside the measurement.
    run(make_inputs(config, WARM_UP_TOKENS * config["pairs"], torch))
    inputs = make_inputs(config, config["tokens"], torch)
    hidden_states, weight = inputs[0], inputs[1]
    _reply({"ready": True})

    for command in sys.stdin:
        command = command.strip()
        if command == "memory":
            meter = MemoryMeter(config["device"], torch)
            meter.start()
            loss = run(inputs)
            peak_growth = meter.peak_growth()
            grad_bytes = sum(
                tensor.grad.numel() * tensor.grad.element_size()
                for tensor in (hidden_states, weight)
                if tensor.grad is not None
            )
            _reply(
                {
                    "loss": loss.item(),
                    "peak_extra_bytes": peak_growth - grad_bytes,
                    "peak_growth_bytes": peak_growth,
                    "grad_bytes": grad_bytes,
                    "torch_threads": torch.get_num_threads(),
                }
            )
        elif command == "step":
            started = time.perf_counter()
            run(inputs)
            _reply({"seconds": time.perf_counter() - started})
        else:
            return


def _reply(message):
    print(json.dumps(message), flush=True)


# The matrix of cases, each in a subprocess


def case_groups(arguments):
    """Yield, per (N, P, head), the configs of all methods: they are timed interleaved."""
    for tokens in arguments.tokens:
        for pairs in arguments.pairs:
            for head in arguments.head:
                yield [
                    {
                        "method": method,
                        "tokens": tokens,
                        "pairs": pairs,
                        "head": head,
                        "hidden": arguments.hidden,
                        "vocab": arguments.vocab,
                        "device": arguments.device,
                        "dtype": arguments.dtype,
                        "repeats": arguments.repeats,
                        "threads": arguments.threads,
                    }
                    for method in arguments.methods
                ]


class CaseProcess:
    """One method's case in its own Python process, driven through stdin and stdout."""

    def __init__(self, config, timeout):
        self.config = config
        self.timeout = timeout
        self.result = dict(config)
        package = REQUIRED_PACKAGES.get(config["method"])
        if package and importlib.util.find_spec(package) is None:
            self.result["skipped"] = f"{package} is not installed"
            self.process = None
            return
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-case", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": python_path},
        )
        self.request(None)  # the "ready" line

    @property
    def alive(self):
        return self.process is not None and "skipped" not in self.result

    def request(self, command):
        """Send a command (None sends nothing) and return the reply, or None on failure."""
        if not self.alive:
            return None
        try:
            if command is not None:
                self.process.stdin.write(command + "\n")
                self.process.stdin.flush()
            line = _read_line(self.process.stdout, self.timeout)
        except (BrokenPipeError, TimeoutError) as error:
            line = None
            reason = f"timed out after {self.timeout} s" if isinstance(error, TimeoutError) else ""
        else:
            reason = ""
        if not line:
            self.stop()
            stderr = self.process.stderr.read() if self.process.poll() is not None else ""
            last_lines = "\n".join(stderr.strip().splitlines()[-5:])
            self.result["skipped"] = reason or f"failed: {last_lines}"
            return None
        return json.loads(line)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def _read_line(stream, timeout):
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError
    return stream.readline()


def run_group(configs, timeout):
    """Run one (N, P, head) group: memory one case at a time, then timed rounds interleaved."""
    cases = [CaseProcess(config, timeout) for config in configs]
    for case in cases:
        reply = case.request("memory")
        if reply is not None:
            case.result.update(reply)
            case.result["seconds"] = []
    for _ in range(configs[0]["repeats"]):
        for case in cases:
            reply = case.request("step")
            if reply is not None:
                case.result["seconds"].append(reply["seconds"])
    for case in cases:
        case.stop()
        if "skipped" in case.result:
            continue
        median = statistics.median(case.result["seconds"])
        config = case.config
        flops = 8 * config["tokens"] * config["hidden"] * config["vocab"]
        case.result["median_seconds"] = median
        case.result["effective_tflops"] = flops / median / 1e12
    return [case.result for case in cases]


def format_row(result, baseline):
    label = (
        f"{result['method']:<8} N={result['tokens']:<6} P={result['pairs']:<2} {result['head']:<9}"
    )
    if "skipped" in result:
        return f"{label} skipped: {result['skipped']}"
    memory_mib = result["peak_extra_bytes"] / 2**20
    row = (
        f"{label} peak extra {memory_mib:9.1f} MiB  median {result['median_seconds']:8.3f} s  "
        f"{result['effective_tflops']:7.3f} TFLOP/s  loss {result['loss']:.6f}"
    )
    if baseline is not None and "skipped" not in baseline and result is not baseline:
        memory_share = result["peak_extra_bytes"] / max(1, baseline["peak_extra_bytes"])
        time_ratio = result["median_seconds"] / baseline["median_seconds"]
        row += f"  ({memory_share:.1%} of naive's memory, {time_ratio:.2f}x naive's time)"
    return row


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tokens",
        type=int,
        nargs="+",
        default=[512, 1024, 2048],
        help="scored tokens N per step (default: %(default)s)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        nargs="+",
        default=[1, 8],
        help="chosen/rejected pairs the N tokens are split into",
    )
    parser.add_argument(
        "--head",
        nargs="+",
        choices=("frozen", "trainable"),
        default=["frozen", "trainable"],
        help="whether the LM head gets a gradient",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--hidden", type=int, default=896, help="hidden size H")
    parser.add_argument("--vocab", type=int, default=151936, help="vocabulary size V")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after the first")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads; 0 keeps torch's default"
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--json-output", type=Path, help="also append the JSON lines to this file")
    parser.add_argument("--serve-case", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    if arguments.serve_case:
        serve_case(json.loads(arguments.serve_case))
        return 0

    for configs in case_groups(arguments):
        results = run_group(configs, arguments.timeout)
        baseline = next((result for result in results if result["method"] == "naive"), None)
        for result in results:
            print(format_row(result, baseline), flush=True)
        for result in results:
            line = json.dumps(result)
            print(line, flush=True)
            if arguments.json_output:
                with arguments.json_output.open("a") as handle:
                    handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
