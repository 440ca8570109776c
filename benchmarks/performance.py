"""Performance benchmarks (issue 6). Every ratio is measured within one run.

Sub-benchmarks::

    python -m benchmarks.performance saliency   # ORT gradient vs torch autograd vs captum, 1 thread; GFLOP/s vs sgemm
    python -m benchmarks.performance io         # FITS read + normalise throughput (the I/O floor)
    python -m benchmarks.performance formats    # 64-pixel stamps: FITS vs JPEG vs PNG reading, against the model's cost
    python -m benchmarks.performance e2e        # survey-bars process on 1 and 2 LocalCluster workers
    python -m benchmarks.performance memory     # peak worker RSS for 1k vs 10k inputs
    python -m benchmarks.performance all

Each writes ``benchmarks/results/perf_<name>.json`` and its block in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import save, table

WORK = Path(os.environ.get("SURVEY_BARS_BENCH_DIR", "/tmp/survey-bars-bench"))


def _sims(n, seed=31337):
    from survey_bars.simulate import simulate

    d = WORK / f"sims-{seed}-{n}"
    if not (d / "truth.parquet").exists():
        simulate(d, n, survey="mixed", seed=seed, workers=2)
    return d


# ------------------------------------------------------------------------------ sgemm peak

_SGEMM = r"""
import os, time, json
import numpy as np
n = 1024
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
best = 0.0
for _ in range(7):
    t = time.perf_counter(); a @ b; dt = time.perf_counter() - t
    best = max(best, 2 * n**3 / dt / 1e9)
res = {"numpy": best}
try:
    import torch
    torch.set_num_threads(1)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ta @ tb
    tbest = 0.0
    for _ in range(7):
        t = time.perf_counter(); ta @ tb; dt = time.perf_counter() - t
        tbest = max(tbest, 2 * n**3 / dt / 1e9)
    res["torch"] = tbest
except ImportError:
    pass
print(json.dumps(res))
"""


def sgemm_peak():
    """Single-core sgemm GFLOP/s (best of numpy/OpenBLAS and torch/MKL-DNN, 1 thread)."""
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    out = subprocess.run([sys.executable, "-c", _SGEMM], capture_output=True, text=True, env=env, timeout=300)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["peak"] = max(res.values())
    return res


_SUSTAINED = r"""
import time, numpy as np
n = 512
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
k, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < 6.0:
    a @ b
    k += 1
print(2 * n**3 * k / (time.perf_counter() - t0) / 1e9)
"""


def sgemm_scaling():
    """Sustained 1-thread sgemm GFLOP/s of one process alone and of two at once.

    The ratio (two together) / (2 x one alone) is the best 1 -> 2 worker efficiency that
    compute-bound work can reach on this machine (shared cores, clocks and caches).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(k):
        procs = [subprocess.Popen([sys.executable, "-c", _SUSTAINED], stdout=subprocess.PIPE, text=True, env=env) for _ in range(k)]
        return [float(p.communicate(timeout=120)[0].strip()) for p in procs]

    one = run(1)[0]
    two = run(2)
    return {"one_process_gflops": one, "two_processes_gflops": two, "efficiency": sum(two) / (2 * one)}


# ------------------------------------------------------------------------------ saliency


def bench_saliency(args):
    import torch

    from survey_bars.inference.bundle import load_bundle
    from survey_bars.training.export import export_saliency
    from survey_bars.training.nets import MorphologyNet, fold_batchnorm
    from survey_bars.inference.runtime import _session

    torch.set_num_threads(1)
    torch.manual_seed(0)
    bundle = load_bundle(args.model)
    arch = bundle.card.get("architecture", {}).get("morphology")
    size = bundle.preprocessing.size
    samples = args.samples
    galaxies = args.galaxies
    net = fold_batchnorm(MorphologyNet(arch)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    tmp = WORK / "bench-saliency.onnx"
    WORK.mkdir(parents=True, exist_ok=True)
    export_saliency(net, tmp, size)
    sess = _session(tmp, 1)
    # torch and captum compute the same function as the exported graph: a 1 x 1 skip fuse
    # factorised (upsampling after the convolution), which is also the faster form in torch;
    # other networks ignore the flag
    factorised = net.evidence_design and net.skip is not None and net.skip["fuse"][1] == 1

    def bar_logit(model, x):
        return model.bar_logit(x, factorised=True)

    rng = np.random.default_rng(0)
    imgs = rng.normal(0.2, 0.3, size=(galaxies, 1, size, size)).astype(np.float32)
    noisy = (np.repeat(imgs, samples, axis=0) + 0.1 * rng.standard_normal((galaxies * samples, 1, size, size))).astype(np.float32)
    n_grad = noisy.shape[0]

    def t_best(fn, reps=args.reps):
        fn()
        best = np.inf
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    # FLOPs of one input gradient (forward + input backward), counted by torch
    from torch.utils.flop_counter import FlopCounterMode

    x1 = torch.from_numpy(noisy[:8]).requires_grad_(True)
    with FlopCounterMode(display=False) as fc:
        bar_logit(net, x1).sum().backward()
    g = x1.grad
    flop_per_grad = fc.get_total_flops() / 8

    results = {}
    for batch in args.batches:
        def ort_run(b=batch):
            for s in range(0, n_grad, b):
                sess.run(["grad"], {"image": noisy[s : s + b]})

        def torch_run(b=batch):
            for s in range(0, n_grad, b):
                x = torch.from_numpy(noisy[s : s + b]).requires_grad_(True)
                torch.autograd.grad(bar_logit(net, x).sum(), x)

        results[f"ort_b{batch}"] = n_grad / t_best(ort_run)
        results[f"torch_b{batch}"] = n_grad / t_best(torch_run)

    # captum NoiseTunnel(Saliency): one call per galaxy, its samples batched together
    try:
        from captum.attr import NoiseTunnel, Saliency

        nt = NoiseTunnel(Saliency(lambda x: bar_logit(net, x)))

        def captum_run():
            for i in range(galaxies):
                x = torch.from_numpy(imgs[i : i + 1])
                nt.attribute(x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=samples, stdevs=0.1, abs=True)

        results["captum"] = n_grad / t_best(captum_run)
    except ImportError:
        results["captum"] = float("nan")

    # correctness of the exported graph on these inputs, against a float64 torch reference
    # (float32 torch itself can flip a ReLU near zero and differ by a few per cent locally)
    import copy

    net64 = copy.deepcopy(net).double()
    x64 = torch.from_numpy(noisy[:8].astype(np.float64)).requires_grad_(True)
    g64 = torch.autograd.grad(bar_logit(net64, x64).sum(), x64)[0].numpy()
    (og,) = sess.run(["grad"], {"image": noisy[:8]})
    rel = float(np.abs(og - g64).max() / np.abs(g64).max())
    rel_torch32 = float(np.abs(g.numpy() - g64).max() / np.abs(g64).max())

    peak = sgemm_peak()
    best_b = max(args.batches, key=lambda b: results[f"ort_b{b}"])
    best_t = max(args.batches, key=lambda b: results[f"torch_b{b}"])
    ort_rate = results[f"ort_b{best_b}"]
    torch_rate = results[f"torch_b{best_t}"]
    gflops = ort_rate * flop_per_grad / 1e9
    data = {
        "samples": samples, "galaxies": galaxies, "size": size, "arch": arch,
        "mflop_per_gradient": flop_per_grad / 1e6, "gradients_per_s": results,
        "best_ort_batch": best_b, "best_torch_batch": best_t,
        "ratio_vs_torch": ort_rate / torch_rate, "ratio_vs_captum": ort_rate / results["captum"],
        "ort_gflops": gflops, "sgemm_peak_gflops": peak, "frac_of_peak": gflops / peak["peak"],
        "torch_gflops": torch_rate * flop_per_grad / 1e9, "grad_rel_err_vs_float64": rel, "torch32_rel_err_vs_float64": rel_torch32,
    }
    rows = [[f"onnxruntime (batch {b})", f"{results[f'ort_b{b}']:.0f}", f"{results[f'ort_b{b}'] * flop_per_grad / 1e9:.1f}"] for b in args.batches]
    rows += [[f"torch autograd (batch {b})", f"{results[f'torch_b{b}']:.0f}", f"{results[f'torch_b{b}'] * flop_per_grad / 1e9:.1f}"] for b in args.batches]
    rows += [[f"captum NoiseTunnel(Saliency) ({samples} samples/call)", f"{results['captum']:.0f}", f"{results['captum'] * flop_per_grad / 1e9:.1f}"]]
    md = "\n".join([
        f"Same network ({flop_per_grad / 1e6:.1f} MFLOP per input gradient, {size}x{size}), {galaxies} galaxies x {samples} SmoothGrad samples, 1 thread everywhere"
        + (" (its 1 x 1 skip fuse factorised everywhere, as the exported graph computes it)." if factorised else "."),
        "",
        table(["implementation", "gradients / s", "GFLOP/s"], rows),
        "",
        f"- onnxruntime / torch autograd: **{data['ratio_vs_torch']:.2f}x**; onnxruntime / captum: **{data['ratio_vs_captum']:.2f}x**.",
        f"- single-core sgemm peak: {peak['peak']:.1f} GFLOP/s (numpy {peak['numpy']:.1f}, torch {peak.get('torch', float('nan')):.1f}); onnxruntime saliency reaches {gflops:.1f} GFLOP/s = **{100 * data['frac_of_peak']:.0f} %** of it.",
        f"- exported gradient vs a float64 torch reference on these inputs: max relative error {rel:.1e} (float32 torch autograd: {rel_torch32:.1e}).",
    ])
    save("perf_saliency", data, md, "python -m benchmarks.performance saliency")


# ------------------------------------------------------------------------------ io floor


def bench_io(args):
    from survey_bars.io import read_cutout
    from survey_bars.normalise import normalise

    d = _sims(args.n_io)
    files = sorted(str(p) for p in d.glob("*.fits"))
    read_cutout(files[0])
    t = time.perf_counter()
    cuts = [read_cutout(f) for f in files]
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    for c in cuts:
        normalise(c.data)
    t_norm = time.perf_counter() - t
    px = np.mean([c.data.size for c in cuts])
    data = {"n": len(files), "read_per_s": len(files) / t_read, "normalise_per_s": len(files) / t_norm, "both_per_s": len(files) / (t_read + t_norm), "mean_pixels": float(px)}
    md = "\n".join([
        f"{len(files)} simulated cutouts (mean {px:.0f} pixels), one process:",
        "",
        table(["stage", "cutouts / s"], [["read_cutout (FITS + WCS)", f"{data['read_per_s']:.0f}"], ["normalise", f"{data['normalise_per_s']:.0f}"], ["both", f"{data['both_per_s']:.0f}"]]),
    ])
    save("perf_io", data, md, f"python -m benchmarks.performance io --n-io {args.n_io}")


# ------------------------------------------------------------------------------ formats


def _stamps(n, size=64):
    """n 64-pixel stamps of the same galaxies as FITS, colour JPEG (q 90) and greyscale PNG."""
    from PIL import Image

    from survey_bars.testing import galaxy_image, write_cutout

    d = WORK / f"stamps-{n}-{size}"
    done = d / "done"
    if not done.exists():
        d.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(5)
        for i in range(n):
            img = galaxy_image(n=size, r50=float(rng.uniform(3, 7)), bar_len=float(rng.uniform(8, 20)) if i % 2 else None,
                               bar_pa_deg=float(rng.uniform(0, 180)), seed=i)
            write_cutout(d / f"s{i:05d}.fits", img.astype(np.float32), objid=f"s{i:05d}")
            u8 = np.clip(np.round((img - img.min()) / (img.max() - img.min()) * 255), 0, 255).astype(np.uint8)[::-1]
            Image.fromarray(np.dstack([u8, u8, u8])).save(d / f"s{i:05d}.jpg", quality=90)
            Image.fromarray(u8).save(d / f"s{i:05d}.png")
        done.write_text("ok")
    return {ext: sorted(str(p) for p in d.glob(f"*.{ext}")) for ext in ("fits", "jpg", "png")}


def bench_formats(args):
    """Read throughput of 64-pixel stamps per format, against normalise and the model's per-galaxy cost."""
    from survey_bars.io import read_cutout
    from survey_bars.normalise import normalise
    from survey_bars.pipeline import RunOptions, process_items
    from survey_bars.inference.runtime import get_runtime

    files = _stamps(args.n_io)
    n = len(files["fits"])
    rates = {}
    for ext, fs in files.items():
        read_cutout(fs[0], pixel_scale=0.262)
        best = np.inf
        for _ in range(args.reps):  # best of reps: the read floor, free of other load
            t = time.perf_counter()
            cuts = [read_cutout(f, pixel_scale=0.262) for f in fs]
            best = min(best, time.perf_counter() - t)
        rates[ext] = n / best
    t = time.perf_counter()
    for c in cuts:
        normalise(c.data)
    norm_rate = n / (time.perf_counter() - t)
    rt = get_runtime(args.model, threads=1)
    k = min(n, 64)
    opts = RunOptions(model=args.model, smoothgrad_samples=args.samples)
    process_items(files["jpg"][:4], opts, runtime=rt)
    t = time.perf_counter()
    table_ = process_items(files["jpg"][:k], opts, runtime=rt)
    e2e_rate = k / (time.perf_counter() - t)
    n_bar = int(sum(1 for p in table_.column("p_bar").to_pylist() if p is not None and p >= opts.p_bar_min))
    data = {"n": n, "reads_per_s": rates, "jpeg_over_fits": rates["jpg"] / rates["fits"], "png_over_fits": rates["png"] / rates["fits"],
            "normalise_per_s": norm_rate, "process_items_jpeg_per_s": e2e_rate, "bar_candidates": n_bar, "of": k,
            "jpeg_read_share_of_process": e2e_rate / rates["jpg"]}
    md = "\n".join([
        f"{n} stamps of 64 x 64 pixels, the same galaxies in each format, one process, one thread (reads: best of {args.reps}):",
        "",
        table(["stage", "stamps / s", "vs FITS read"], [
            ["read_cutout, FITS (+ WCS)", f"{rates['fits']:.0f}", "1.00"],
            ["read_cutout, colour JPEG (q 90)", f"{rates['jpg']:.0f}", f"{data['jpeg_over_fits']:.2f}"],
            ["read_cutout, greyscale PNG", f"{rates['png']:.0f}", f"{data['png_over_fits']:.2f}"],
            ["normalise", f"{norm_rate:.0f}", ""],
            [f"process_items on the JPEGs (all stages, {n_bar}/{k} bar candidates, {args.samples} SmoothGrad samples)", f"{e2e_rate:.1f}", ""],
        ]),
        "",
        f"Reading a JPEG takes {100 * data['jpeg_read_share_of_process']:.1f} % of a JPEG's time through the whole partition "
        "pipeline: reading is not the bottleneck.",
    ])
    save("perf_formats", data, md, f"python -m benchmarks.performance formats --n-io {args.n_io}")


# ------------------------------------------------------------------------------ end to end


def _run_process(inputs, workers, samples, partition_size, memory=False, saliency_all=False, method="auto", model=None):
    from distributed import Client

    from survey_bars.cluster import local_cluster, process
    from survey_bars.pipeline import RunOptions

    out = WORK / f"e2e-{workers}.parquet"
    if out.exists():
        out.unlink()
    with local_cluster(workers, 1, "4GiB") as cluster, Client(cluster) as client:
        # warm: load the model once per worker before timing
        from survey_bars.inference.runtime import get_runtime

        client.run(lambda: get_runtime(model) and None)
        trace = []
        stop = threading.Event()

        def now_rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

        def sample():  # the workers' current RSS over the job, every 2 s
            while not stop.wait(2.0):
                try:
                    trace.append((time.perf_counter() - t, max(client.run(now_rss).values())))
                except Exception:  # noqa: BLE001 - sampling is best effort
                    pass

        t = time.perf_counter()
        sampler = threading.Thread(target=sample, daemon=True) if memory else None
        if sampler:
            sampler.start()
        s = process(inputs, out, client=client, partition_size=partition_size, options=RunOptions(model=model, smoothgrad_samples=samples, saliency_all=saliency_all, method=method), progress=False)
        dt = time.perf_counter() - t
        stop.set()
        if sampler:
            sampler.join()

        def rss():
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

        peaks = list(client.run(rss).values())
    return s, dt, peaks, trace


def bench_e2e(args):
    d = _sims(args.n_e2e)
    res = {}
    for w in (1, 2):
        s, dt, _, _ = _run_process([str(d)], w, args.samples, args.partition_size)
        res[w] = {"galaxies": s["rows"], "seconds": dt, "per_s": s["rows"] / dt, "per_s_per_core": s["rows"] / dt / w}
    eff = res[2]["per_s"] / (2 * res[1]["per_s"])
    machine = sgemm_scaling()
    cand = _frac_bar_candidates(WORK / "e2e-1.parquet")
    s, dt, _, _ = _run_process([str(d)], 1, args.samples, args.partition_size, saliency_all=True)
    every = {"galaxies": s["rows"], "seconds": dt, "per_s": s["rows"] / dt, "per_s_per_core": s["rows"] / dt}
    from survey_bars.inference.bundle import load_bundle
    from survey_bars.measure import resolve_method

    default = resolve_method(load_bundle(None).card, "auto")
    moments = None
    if default != "moments":  # the moments measurement's cost, same run, 1 worker
        s, dt, _, _ = _run_process([str(d)], 1, args.samples, args.partition_size, method="moments")
        moments = {"galaxies": s["rows"], "seconds": dt, "per_s": s["rows"] / dt, "per_s_per_core": s["rows"] / dt,
                   "ratio_to_default": (s["rows"] / dt) / res[1]["per_s"]}
    baseline = _against_baseline(d, args) if args.baseline_model else None
    from survey_bars.cluster import default_partition_size

    psize = args.partition_size or default_partition_size(args.n_e2e)
    data = {"samples": args.samples, "partition_size": psize, "workers": res, "scaling_efficiency": eff, "saliency_all_1_worker": every, "default_method": default, "moments_1_worker": moments, "frac_bar_candidates": cand, "machine_sgemm_scaling": machine, "baseline": baseline}
    md = "\n".join([
        f"`survey-bars process` on {args.n_e2e} simulated cutouts, {psize} per partition, SmoothGrad {args.samples or 'bundle default'} samples, LocalCluster with 1 thread per worker, model loaded before timing:",
        "",
        table(
            ["workers", "SmoothGrad for", "seconds", "galaxies / s", "galaxies / s / core"],
            [[w, f"bar candidates (default, `{default}`)", f"{r['seconds']:.1f}", f"{r['per_s']:.1f}", f"{r['per_s_per_core']:.1f}"] for w, r in res.items()]
            + [[1, "every galaxy (`--saliency-all`)", f"{every['seconds']:.1f}", f"{every['per_s']:.1f}", f"{every['per_s_per_core']:.1f}"]]
            + ([[1, "bar candidates, `--method moments`", f"{moments['seconds']:.1f}", f"{moments['per_s']:.1f}",
                 f"{moments['per_s_per_core']:.1f} ({100 * moments['ratio_to_default']:.0f} % of the default)"]] if moments else []),
        ),
        "",
        f"Bar candidates (p_bar >= 0.5, SmoothGrad computed and bar measured): {100 * cand:.0f} % of these galaxies (simulated class mix: 40 % barred).",
        "",
        f"Scaling efficiency 1 -> 2 workers: **{100 * eff:.0f} %**.",
        *([
            "",
            f"Against the bundle `{baseline['model']}` ({baseline['name']} {baseline['version']}), 1 worker, the two run in "
            f"turn {len(baseline['pairs'])} times: the shipped bundle takes **{baseline['median_wall_ratio']:.3f}** of its wall "
            f"time (median; pairs {min(baseline['pairs']):.3f}-{max(baseline['pairs']):.3f}; bar candidates "
            f"{100 * baseline['frac_bar_candidates']:.0f} % against {100 * cand:.0f} %).",
        ] if baseline else []),
        "",
        f"Machine ceiling, same run: a sustained 1-thread sgemm gives {machine['one_process_gflops']:.1f} GFLOP/s alone and "
        f"{' + '.join(f'{g:.1f}' for g in machine['two_processes_gflops'])} GFLOP/s as two processes at once: "
        f"**{100 * machine['efficiency']:.0f} %** 2-process efficiency for compute-bound work on these 2 cores "
        "(the scheduler, nanny and client processes share them too).",
    ])
    save("perf_e2e", data, md, f"python -m benchmarks.performance e2e --n-e2e {args.n_e2e}" + (f" --partition-size {args.partition_size}" if args.partition_size else "")
         + (f" --baseline-model {args.baseline_model} --reps {args.reps}" if args.baseline_model else ""))


def _against_baseline(d, args):
    """The shipped bundle's wall time over a baseline bundle's, 1 worker, run in turn ``args.reps`` times."""
    from survey_bars.inference.bundle import load_bundle

    pairs = []
    for _ in range(args.reps):
        _, ours, _, _ = _run_process([str(d)], 1, args.samples, args.partition_size)
        _, theirs, _, _ = _run_process([str(d)], 1, args.samples, args.partition_size, model=args.baseline_model)
        pairs.append(ours / theirs)
    card = load_bundle(args.baseline_model).card
    return {"model": args.baseline_model, "name": card.get("name"), "version": card.get("version"), "pairs": pairs,
            "median_wall_ratio": float(np.median(pairs)), "frac_bar_candidates": _frac_bar_candidates(WORK / "e2e-1.parquet")}


def _frac_bar_candidates(path):
    """Fraction of ok rows with p_bar >= 0.5 in a catalogue."""
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["status", "p_bar"]).to_pandas()
    ok = t[t.status == "ok"]
    return float((ok.p_bar >= 0.5).mean()) if len(ok) else float("nan")


def bench_memory(args):
    base = _sims(args.n_mem_base)
    files = sorted(base.glob("*.fits"))
    res = {}
    for n in (args.n_small, args.n_large):
        d = WORK / f"links-{n}"
        if not d.exists() or len(list(d.glob("*.fits"))) != n:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            for i in range(n):
                os.link(files[i % len(files)], d / f"g{i:06d}.fits")
        s, dt, peaks, trace = _run_process([str(d)], 1, args.samples_mem, args.partition_size, memory=True)
        rss_t = np.array([r for _, r in trace]) if trace else np.array([np.nan])
        res[n] = {
            "rows": s["rows"], "seconds": dt, "peak_rss_mib": max(peaks),
            "rss_trace": [[round(a, 1), round(b, 1)] for a, b in trace],
            "rss_sampled_max_mib": float(np.nanmax(rss_t)),
            "rss_last_quarter_median_mib": float(np.nanmedian(rss_t[3 * len(rss_t) // 4:])),
        }
    growth = res[args.n_large]["peak_rss_mib"] / res[args.n_small]["peak_rss_mib"] - 1
    data = {"samples": args.samples_mem, "runs": res, "growth": growth}
    md = "\n".join([
        f"One LocalCluster worker, partition size {args.partition_size or 'default'}, SmoothGrad {args.samples_mem} samples; inputs are hard links to {len(files)} simulated cutouts (object ids differ by file name only where headers allow):",
        "",
        table(
            ["inputs", "seconds", "worker peak RSS [MiB]", "sampled max RSS [MiB]", "median RSS, last quarter [MiB]"],
            [[n, f"{r['seconds']:.0f}", f"{r['peak_rss_mib']:.0f}", f"{r['rss_sampled_max_mib']:.0f}", f"{r['rss_last_quarter_median_mib']:.0f}"] for n, r in res.items()],
        ),
        "",
        "Peak RSS is the worker's `ru_maxrss`; the sampled columns poll its current RSS every 2 s (trace in the JSON).",
        "",
        f"Peak RSS growth from {args.n_small} to {args.n_large} inputs: **{100 * growth:+.1f} %**.",
    ])
    save("perf_memory", data, md, f"python -m benchmarks.performance memory --n-small {args.n_small} --n-large {args.n_large} --samples-mem {args.samples_mem}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["saliency", "io", "formats", "e2e", "memory", "all"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--samples", type=int, default=None, help="SmoothGrad samples for e2e (default: the bundle's)")
    ap.add_argument("--galaxies", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[32, 128, 256])
    ap.add_argument("--n-io", type=int, default=300)
    ap.add_argument("--n-e2e", type=int, default=400)
    ap.add_argument("--partition-size", type=int, default=None, help="files per partition (default: survey-bars' default)")
    ap.add_argument("--baseline-model", default=None, metavar="DIR",
                    help="e2e: also time this bundle against the shipped one, in turn --reps times (1 worker)")
    ap.add_argument("--n-mem-base", type=int, default=200)
    ap.add_argument("--n-small", type=int, default=1000)
    ap.add_argument("--n-large", type=int, default=10000)
    ap.add_argument("--samples-mem", type=int, default=8)
    args = ap.parse_args(argv)
    if args.samples is None:
        from survey_bars.inference.bundle import load_bundle

        args.samples = int((load_bundle(args.model).smoothgrad or {}).get("samples", 32))
    for name, fn in [("saliency", bench_saliency), ("io", bench_io), ("formats", bench_formats), ("e2e", bench_e2e), ("memory", bench_memory)]:
        if args.what in (name, "all"):
            fn(args)


if __name__ == "__main__":
    main()
