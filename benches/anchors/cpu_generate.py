#!/usr/bin/env python3
"""The PyTorch side of the CPU generation benchmark (benches/benches/generate.rs).

Loads the checkpoint the Rust suite wrote (GENERATE_BENCH_SAVE=DIR) with transformers'
LlamaForCausalLM in f32 and times the same two steps on the same prompt ids:
  prefill  model(prompt, use_cache=True): 128 tokens into an empty cache, logits for every position;
  decode   model(next, past_key_values=cache, use_cache=True): one token against a cache of 128
           positions (a fresh copy of the prefilled cache each run, copied outside the timing).
Prints one JSON line per step: the median milliseconds over --reps runs after --warmup, and
tokens per second.

Usage: python3 benches/anchors/cpu_generate.py --model DIR [--threads N] [--reps R] [--warmup W]
(scripts/bench-generate.sh runs it next to the Rust suite.)
"""
import argparse
import copy
import json
import statistics
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the checkpoint folder the Rust suite wrote")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    cfg = model.config
    vocab = cfg.vocab_size
    # The same ids as the Rust suite's prompt(): (i * 7919 + 13) % vocab.
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(args.prompt + 1)]])
    prompt, nxt = ids[:, : args.prompt], ids[:, args.prompt :]
    name = f"llama{cfg.num_hidden_layers}x{cfg.hidden_size}"
    with torch.inference_mode():
        prefill = median_ms(lambda _: model(prompt, use_cache=True), args.reps, args.warmup)
        cache = model(prompt, use_cache=True).past_key_values
        decode = median_ms(
            lambda c: model(nxt, past_key_values=c, use_cache=True),
            args.reps,
            args.warmup,
            setup=lambda: copy.deepcopy(cache),
        )
    for step, ms, tokens in (("prefill", prefill, args.prompt), ("decode", decode, 1)):
        shape = f"t{args.prompt}" if step == "prefill" else f"ctx{args.prompt}"
        print(json.dumps({
            "id": f"generate/{step}/{name}/{shape}",
            "impl": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}",
            "threads": args.threads,
            "median_ms": round(ms, 3),
            "tokens_per_s": round(tokens / ms * 1e3, 1),
        }))


if __name__ == "__main__":
    main()
