"""The MLP of dsl-examples/mlp.strata in JAX (XLA on the CPU), timed like `strata bench`.

64 -> 128 -> 128 -> 10 with ReLU, softmax cross-entropy on integer labels, Adam
(lr 1e-3, betas 0.9/0.999, eps 1e-8) written out by hand so the update is the same
arithmetic as Strata's. Prints one JSON line per (entry, batch):
{"entry": "train_step", "batch": 32, "runs_per_s": ..., "median_ms": ...}

Usage: python3 mlp_jax.py [--seconds S] [--batch N ...]
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp


def init(key):
    sizes = [(64, 128), (128, 128), (128, 10)]
    params = []
    for i, (fan_in, fan_out) in enumerate(sizes):
        key, wk = jax.random.split(key)
        bound = (6.0 / fan_in) ** 0.5
        w = jax.random.uniform(wk, (fan_out, fan_in), jnp.float32, -bound, bound)
        params.append((w, jnp.zeros((fan_out,), jnp.float32)))
    return params


def logits_of(params, x):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h


def loss_of(params, x, y):
    logits = logits_of(params, x)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


@jax.jit
def infer(params, x):
    logits = logits_of(params, x)
    return logits, jax.nn.softmax(logits)


@jax.jit
def train_step(params, m, v, step, x, y):
    loss, grads = jax.value_and_grad(loss_of)(params, x, y)
    step = step + 1.0
    lr = 1e-3 / (1.0 - 0.9**step)
    corr = jnp.sqrt(1.0 - 0.999**step)
    new_params, new_m, new_v = [], [], []
    for p, g, mm, vv in zip(jax.tree_util.tree_leaves(params),
                            jax.tree_util.tree_leaves(grads),
                            jax.tree_util.tree_leaves(m),
                            jax.tree_util.tree_leaves(v)):
        mm = 0.9 * mm + 0.1 * g
        vv = 0.999 * vv + 0.001 * g * g
        new_params.append(p - lr * mm / (jnp.sqrt(vv) / corr + 1e-8))
        new_m.append(mm)
        new_v.append(vv)
    tree = jax.tree_util.tree_structure(params)
    return (jax.tree_util.tree_unflatten(tree, new_params),
            jax.tree_util.tree_unflatten(tree, new_m),
            jax.tree_util.tree_unflatten(tree, new_v), step, loss)


def time_runs(run, seconds, min_runs=20, warmup=5):
    for _ in range(warmup):
        run()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, action="append")
    args = parser.parse_args()
    key = jax.random.PRNGKey(0)
    params = init(key)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    for batch in args.batch or [32]:
        x = jax.random.uniform(key, (batch, 64), jnp.float32)
        y = jnp.zeros((batch,), jnp.int32)

        def run_infer():
            jax.block_until_ready(infer(params, x))

        state = [params, zeros, zeros, jnp.float32(0.0)]

        def run_train():
            p, m, v, s, loss = train_step(state[0], state[1], state[2], state[3], x, y)
            jax.block_until_ready(loss)
            state[:] = [p, m, v, s]

        for entry, run in (("infer", run_infer), ("train_step", run_train)):
            median = time_runs(run, args.seconds)
            print(json.dumps({"entry": entry, "batch": batch,
                              "runs_per_s": 1.0 / median, "median_ms": median * 1e3}))


if __name__ == "__main__":
    main()
