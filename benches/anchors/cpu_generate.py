#!/usr/bin/env python3
"""The PyTorch side of the CPU generation benchmark (benches/benches/generate.rs).

Loads the checkpoint the Rust suite wrote (GENERATE_BENCH_SAVE=DIR) with transformers'
LlamaForCausalLM in f32 and times the same three steps on the same prompt ids:
  prefill  model(prompt, use_cache=True): 128 tokens into an empty cache, logits for every position;
  first-token  model.generate(prompt, max_new_tokens=1, do_sample=False): what a user waits for
           before the first token (transformers computes the head on the last position only);
  decode   model(next, past_key_values=cache, use_cache=True): one token against a cache of 128
           positions (a fresh copy of the prefilled cache each run, copied outside the timing).
Prints one JSON line per step: the median milliseconds over --reps runs after --warmup, and
tokens per second.

The same checkpoint is also loaded in bf16 (`dtype=torch.bfloat16`) and timed under the ids
`generate/{step}/{name}-bf16/...`, next to the Rust suite's bf16 model.

When bitsandbytes is installed (0.45 or later runs 4-bit layers on the CPU), the same checkpoint
is loaded a second time with transformers' BitsAndBytesConfig (NF4, blocks of 64, no double
quantization, f32 compute: the seven projections of every layer become bnb Linear4bit, the head
stays f32) and timed the same way under the ids `generate/{step}/{name}-nf4/...`, next to the
Rust suite's NF4 model, which quantizes the same weights the same way. --no-nf4 skips it.

Usage: python3 benches/anchors/cpu_generate.py --model DIR [--threads N] [--reps R] [--warmup W]
       [--no-nf4]
(scripts/bench-generate.sh runs it next to the Rust suite.)
"""
import argparse
import copy
import importlib.util
import json
import statistics
import sys
import time

import torch
from transformers import LlamaForCausalLM


def median_ms(step, reps, warmup, setup=lambda: None):
    for _ in range(warmup):
        step(setup())
    times = []
    for _ in range(reps):
        state = setup()
        t0 = time.perf_counter()
        step(state)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_steps(model, prompt_len, reps, warmup):
    """Median ms of a prefill of `prompt_len` ids, of generating one token after them, and of
    one decode step after them."""
    vocab = model.config.vocab_size
    # The same ids as the Rust suite's prompt(): (i * 7919 + 13) % vocab.
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(prompt_len + 1)]])
    prompt, nxt = ids[:, :prompt_len], ids[:, prompt_len:]
    with torch.inference_mode():
        prefill = median_ms(lambda _: model(prompt, use_cache=True), reps, warmup)
        first = median_ms(
            lambda _: model.generate(prompt, max_new_tokens=1, do_sample=False, pad_token_id=0),
            reps,
            warmup,
        )
        cache = model(prompt, use_cache=True).past_key_values
        decode = median_ms(
            lambda c: model(nxt, past_key_values=c, use_cache=True),
            reps,
            warmup,
            setup=lambda: copy.deepcopy(cache),
        )
    return prefill, first, decode


def report(name, impl, threads, prompt_len, prefill, first, decode):
    steps = (("prefill", prefill, prompt_len), ("first-token", first, prompt_len), ("decode", decode, 1))
    for step, ms, tokens in steps:
        shape = f"ctx{prompt_len}" if step == "decode" else f"t{prompt_len}"
        print(json.dumps({
            "id": f"generate/{step}/{name}/{shape}",
            "impl": impl,
            "threads": threads,
            "median_ms": round(ms, 3),
            "tokens_per_s": round(tokens / ms * 1e3, 1),
        }), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the checkpoint folder the Rust suite wrote")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-nf4", action="store_true", help="skip the bitsandbytes NF4 model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    versions = f"transformers {__import__('transformers').__version__}, torch {torch.__version__}"

    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    cfg = model.config
    name = f"llama{cfg.num_hidden_layers}x{cfg.hidden_size}"
    report(name, versions, args.threads, args.prompt, *time_steps(model, args.prompt, args.reps, args.warmup))
    del model

    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    report(f"{name}-bf16", versions, args.threads, args.prompt, *time_steps(model, args.prompt, args.reps, args.warmup))
    del model

    if args.no_nf4:
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        print("note: bitsandbytes is not installed, so the NF4 model was skipped", file=sys.stderr)
        return
    import bitsandbytes
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=False,
        bnb_4bit_compute_dtype=torch.float32,
    )
    try:
        model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32, quantization_config=quant).eval()
    except Exception as e:  # e.g. a bitsandbytes without a CPU backend: keep the rows above
        print(f"note: bitsandbytes could not load the NF4 model ({e}), so it was skipped", file=sys.stderr)
        return
    impl = f"{versions}, bitsandbytes {bitsandbytes.__version__}"
    report(f"{name}-nf4", impl, args.threads, args.prompt, *time_steps(model, args.prompt, args.reps, args.warmup))


if __name__ == "__main__":
    main()
