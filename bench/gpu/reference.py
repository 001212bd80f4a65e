#!/usr/bin/python3
"""Parity and distillation-step timing of gpu_bench (ours) against PyTorch eager, in one run.

The reference model is timm's swin_tiny_patch4_window7_224 when timm is installed (the GPU
machine), else torchvision's swin_t (any Debian machine), with random weights:

1. parity: the reference's state_dict is saved as safetensors, gpu_bench loads it into the
   swin_t preset and runs the same input; logits are compared in fp32 and, on CUDA, under bf16
   autocast (tolerances below);
2. distillation step at 224x224: teacher Swin-T forward without gradients, student Swin-T with
   MLP ratio 1.875 (32.8% fewer MACs) forward, 0.5 CE + 0.5 T^2 soft CE (T 4), backward,
   gradient clipping at 1, AdamW; bf16 autocast and TF32 on CUDA; random images. Repetitions
   alternate between ours and eager; medians and their ratio are reported.

  /usr/bin/python3 bench/gpu/reference.py --binary build-gpu/bin/gpu_bench --out OUT_DIR

Writes OUT_DIR/gpu-results.md and prints it.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# The golden-file script's safetensors writer (F32/I64, no extra package needed).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                "pipeline", "golden"))
from make_golden import write_safetensors  # noqa: E402

# Largest |ours - reference| accepted, relative to max(1, max |reference logit|).
FP32_TOLERANCE_CPU = 1e-4
FP32_TOLERANCE_CUDA = 1e-3  # kernels reduce in another order than the CPU
BF16_TOLERANCE = 5e-2       # bf16 keeps 8 bits of mantissa


def read_safetensors_f32(path, name):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    entry = header[name]
    if entry["dtype"] != "F32":
        raise ValueError(f"{path}: {name} is {entry['dtype']}, expected F32")
    begin, end = entry["data_offsets"]
    return torch.from_numpy(np.frombuffer(data[begin:end], dtype=np.float32).copy()).reshape(
        entry["shape"])


def make_models(source, student_mlp_ratio):
    if source == "timm":
        import timm
        teacher = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
        student = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False,
                                    mlp_ratio=student_mlp_ratio)
        return teacher, student, "native"
    from torchvision.models.swin_transformer import SwinTransformer, swin_t
    teacher = swin_t()
    student = SwinTransformer(patch_size=[4, 4], embed_dim=96, depths=[2, 2, 6, 2],
                              num_heads=[3, 6, 12, 24], window_size=[7, 7],
                              mlp_ratio=student_mlp_ratio, stochastic_depth_prob=0.0)
    return teacher, student, "torchvision"


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def parity(args, device, teacher, naming):
    torch.manual_seed(1)
    images = torch.randn(args.parity_batch, 3, 224, 224)
    # Parameters as F32, index buffers as I64 (our loader rebuilds those).
    weights = {name: tensor.float() if tensor.is_floating_point() else tensor
               for name, tensor in teacher.state_dict().items()
               if tensor.is_floating_point() or tensor.dtype == torch.int64}
    write_safetensors(f"{args.out}/weights.safetensors", weights)
    write_safetensors(f"{args.out}/input.safetensors", {"input": images})
    model = teacher.to(device).eval()
    rows = []
    modes = [("fp32", False)] + ([("bf16 autocast", True)] if device.type == "cuda" else [])
    for label, bf16 in modes:
        with torch.no_grad(), (autocast(device) if bf16 else torch.autocast("cpu", enabled=False)):
            reference = model(images.to(device)).float().cpu()
        out = f"{args.out}/logits-{'bf16' if bf16 else 'fp32'}.safetensors"
        subprocess.run([args.binary, "--mode=parity", f"--device={device.type}",
                        f"--weights={args.out}/weights.safetensors", f"--naming={naming}",
                        f"--input={args.out}/input.safetensors", f"--output={out}",
                        f"--bf16={'true' if bf16 else 'false'}"], check=True)
        ours = read_safetensors_f32(out, "logits")
        scale = max(1.0, reference.abs().max().item())
        error = (ours - reference).abs().max().item() / scale
        tolerance = BF16_TOLERANCE if bf16 else (
            FP32_TOLERANCE_CUDA if device.type == "cuda" else FP32_TOLERANCE_CPU)
        agree = (ours.argmax(-1) == reference.argmax(-1)).float().mean().item()
        rows.append((label, error, tolerance, agree))
    model.cpu()
    return rows


def eager_distill_rate(args, device, teacher, student):
    teacher = teacher.to(device).eval()
    student = student.to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.05)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, 224, 224, device=device)
    labels = torch.randint(0, 1000, (args.batch,), device=device)
    temperature = 4.0

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            with torch.no_grad():
                teacher_logits = teacher(images)
            logits = student(images).float()
            soft_targets = torch.softmax(teacher_logits.float() / temperature, -1)
            soft = -(soft_targets * torch.log_softmax(logits / temperature, -1)).sum(-1).mean()
            loss = 0.5 * F.cross_entropy(logits, labels) + 0.5 * soft * temperature ** 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    rate = args.batch * args.steps / (time.perf_counter() - start)
    teacher.cpu()
    student.cpu()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def ours_distill_rate(args, device):
    run = subprocess.run([args.binary, "--mode=distill", f"--device={device.type}",
                          f"--batch={args.batch}", f"--steps={args.steps}",
                          f"--warmup={args.warmup}", f"--threads={args.threads}",
                          f"--student_mlp_ratio={args.student_mlp_ratio}"],
                         check=True, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True, help="path of gpu_bench")
    parser.add_argument("--out", required=True, help="directory for the files and the results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--source", default="", help="timm or torchvision (default: timm if "
                        "installed)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--parity_batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--student_mlp_ratio", type=float, default=1.875)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    source = args.source
    if not source:
        try:
            import timm  # noqa: F401
            source = "timm"
        except ImportError:
            source = "torchvision"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # parity first, in full fp32
        torch.backends.cudnn.allow_tf32 = False
    teacher, student, naming = make_models(source, args.student_mlp_ratio)
    parity_rows = parity(args, device, teacher, naming)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ours_rates, eager_rates, ours_last = [], [], {}
    for _ in range(args.repetitions):
        ours_last = ours_distill_rate(args, device)
        ours_rates.append(ours_last["images_per_second"])
        eager_rates.append(eager_distill_rate(args, device, teacher, student))
    ours, eager = statistics.median(ours_rates), statistics.median(eager_rates)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"## gpu_bench vs PyTorch eager on {name}",
        "",
        f"torch {torch.__version__}, reference {source}"
        + (f" {__import__('timm').__version__}" if source == "timm" else "")
        + f", device {device}",
        "",
        "### Parity with the reference's logits (swin_t, random weights, "
        f"{args.parity_batch} images)",
        "",
        "| mode | max abs error / max(1, max abs logit) | tolerance | top-1 agreement | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    passed = True
    for label, error, tolerance, agree in parity_rows:
        ok = error <= tolerance
        passed = passed and ok
        lines.append(f"| {label} | {error:.2e} | {tolerance:.0e} | {agree:.0%} | "
                     f"{'pass' if ok else '**fail**'} |")
    lines += [
        "",
        f"### Distillation step, 224x224, batch {args.batch}, {args.steps} steps x "
        f"{args.repetitions} repetitions (alternating), medians",
        "",
        f"Teacher {ours_last['teacher_macs'] / 1e9:.2f} GMACs, student "
        f"{ours_last['student_macs'] / 1e9:.2f} GMACs "
        f"(-{100 * (1 - ours_last['student_macs'] / ours_last['teacher_macs']):.1f}%); "
        f"our peak device memory {ours_last['peak_device_bytes'] / 2**30:.1f} GiB.",
        "",
        "| ours images/s | PyTorch eager images/s | ratio | target 1.2x |",
        "| --- | --- | --- | --- |",
        f"| {ours:.0f} | {eager:.0f} | {ours / eager:.2f}x | "
        f"{'met' if ours >= 1.2 * eager else '**not met**'} |",
        "",
        f"raw: ours {[round(r, 1) for r in ours_rates]}, "
        f"eager {[round(r, 1) for r in eager_rates]}",
    ]
    text = "\n".join(lines) + "\n"
    with open(f"{args.out}/gpu-results.md", "w") as f:
        f.write(text)
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
