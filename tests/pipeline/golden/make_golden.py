#!/usr/bin/python3
"""Writes the golden files of the Swin parity test from torchvision's SwinTransformer.

Run with Debian's interpreter (torch 1.13, torchvision 0.14):

    /usr/bin/python3 tests/pipeline/golden/make_golden.py tests/pipeline/golden

Model: torchvision.models.swin_transformer.SwinTransformer with a reduced config -- 56x56 RGB
input, patch 4, embed 24, depths [2, 2], heads [2, 4], window 7, MLP ratio 4, 5 classes, no
stochastic depth -- so stage 0 runs on a 14x14 map (four windows, shifted in block 1) and stage 1
on a 7x7 map, which one window covers (no shift). Every parameter is drawn at random from a
fixed seed at a scale that keeps all terms (position bias, LayerNorm affine, biases) visible in
the logits.

Files (safetensors, written here with struct + json, no safetensors package needed):
  swin_torchvision.safetensors   model.state_dict() under torchvision's names, F32, including
                                 the relative_position_index buffers (the importer must drop them)
  swin_io.safetensors            "images" [2, 3, 56, 56] and "logits" [2, 5] (model.eval())
"""

import json
import math
import os
import struct
import sys

import torch
from torchvision.models.swin_transformer import SwinTransformer

CONFIG = dict(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4],
              window_size=[7, 7], mlp_ratio=4.0, stochastic_depth_prob=0.0, num_classes=5)
IMAGE_SIZE = 56
BATCH = 2
SEED = 20240601

DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata=None):
    header = {}
    offset = 0
    blobs = []
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        data = tensor.numpy().tobytes()
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def randomise(model, generator):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=generator))
            elif p.dim() == 1 and name.endswith("weight"):  # LayerNorm scale
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=generator))
            elif p.dim() == 1:  # biases
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
            elif name == "head.weight":  # unscaled, so that logits are O(1-10)
                p.copy_(torch.randn(p.shape, generator=generator))
            else:  # Linear / Conv weights, fan-in scaled
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = SwinTransformer(**CONFIG)
    randomise(model, generator)
    model.eval()
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    with torch.no_grad():
        logits = model(images)
    metadata = {"source": "torchvision.models.swin_transformer.SwinTransformer",
                "config": json.dumps(dict(CONFIG, image_size=IMAGE_SIZE)),
                "torch": torch.__version__}
    write_safetensors(os.path.join(out_dir, "swin_torchvision.safetensors"), model.state_dict(),
                      metadata)
    write_safetensors(os.path.join(out_dir, "swin_io.safetensors"),
                      {"images": images, "logits": logits}, metadata)
    print("logits", logits)


if __name__ == "__main__":
    main()
