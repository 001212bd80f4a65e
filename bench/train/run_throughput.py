#!/usr/bin/python3
"""Training and inference images/s of our LibTorch Swin against the same architecture in
PyTorch eager (torchvision.models.swin_transformer.SwinTransformer), same batch, same threads.

Repetitions alternate between the two so that load from other processes hits both alike; the
medians and their ratio are printed as a Markdown table.

  /usr/bin/python3 bench/train/run_throughput.py --binary build-train/bin/swin_throughput \
      --threads 2 --batch 128 --repetitions 5
"""
import argparse
import json
import statistics
import subprocess
import time

import torch
import torch.nn as nn
from torchvision.models.swin_transformer import SwinTransformer


def parse_ints(text):
    return [int(v) for v in text.split(",") if v]


def build_torch_model(args):
    model = SwinTransformer(
        patch_size=[args.patch, args.patch],
        embed_dim=args.embed_dim,
        depths=parse_ints(args.depths),
        num_heads=parse_ints(args.heads),
        window_size=[args.window, args.window],
        stochastic_depth_prob=0.0,
        num_classes=10,
    )
    # torchvision's patch embedding takes 3 channels; Fashion-MNIST has one.
    model.features[0][0] = nn.Conv2d(1, args.embed_dim, kernel_size=args.patch, stride=args.patch)
    return model


def make_optimizer(model):
    # Same grouping as the trainer: no weight decay on norms, biases and position tables.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim <= 1 or "relative_position_bias_table" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                              {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)


class TorchBench:
    def __init__(self, args):
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        self.model = build_torch_model(args)
        self.optimizer = make_optimizer(self.model)
        self.images = torch.randn(args.batch, 1, 28, 28)
        self.labels = torch.randint(0, 10, (args.batch,))
        self.args = args
        self.model.train()
        for _ in range(args.warmup):
            self.train_step()
        self.model.eval()
        for _ in range(args.warmup):
            self.infer_step()

    def train_step(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.images), self.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()

    def infer_step(self):
        with torch.no_grad():
            self.model(self.images).sum().item()

    def measure(self):
        steps, batch = self.args.steps, self.args.batch
        self.model.train()
        start = time.perf_counter()
        for _ in range(steps):
            self.train_step()
        train_s = time.perf_counter() - start
        self.model.eval()
        start = time.perf_counter()
        for _ in range(steps):
            self.infer_step()
        infer_s = time.perf_counter() - start
        return batch * steps / train_s, batch * steps / infer_s


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="path of swin_throughput")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--patch", type=int, default=2)
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--embed_dim", type=int, default=48)
    parser.add_argument("--depths", default="2,2")
    parser.add_argument("--heads", default="2,4")
    args = parser.parse_args()

    command = [args.binary, f"--threads={args.threads}", f"--batch_size={args.batch}",
               f"--steps={args.steps}", f"--warmup={args.warmup}", "--repetitions=1",
               f"--patch_size={args.patch}", f"--window_size={args.window}",
               f"--embed_dim={args.embed_dim}", f"--depths={args.depths}",
               f"--num_heads={args.heads}"]
    ours = {"train": [], "infer": []}
    eager = {"train": [], "infer": []}
    torch_bench = TorchBench(args)
    for _ in range(args.repetitions):
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        line = json.loads(out.strip().splitlines()[-1])
        ours["train"].append(line["train_images_per_s"])
        ours["infer"].append(line["infer_images_per_s"])
        train, infer = torch_bench.measure()
        eager["train"].append(train)
        eager["infer"].append(infer)

    print(f"Swin patch {args.patch}, window {args.window}, embed {args.embed_dim}, depths "
          f"[{args.depths}], heads [{args.heads}]; batch {args.batch}, {args.threads} threads, "
          f"{args.steps} steps x {args.repetitions} repetitions (alternating); torch "
          f"{torch.__version__}\n")
    print("| mode | ours (LibTorch) images/s | PyTorch eager images/s | ratio |")
    print("| --- | --- | --- | --- |")
    for mode in ("train", "infer"):
        a, b = statistics.median(ours[mode]), statistics.median(eager[mode])
        print(f"| {mode} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    print("\nraw:", json.dumps({"ours": ours, "eager": eager}))


if __name__ == "__main__":
    main()
