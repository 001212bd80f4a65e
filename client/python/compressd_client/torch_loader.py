"""Loads a model compressed by compressd (result/config.json + result/model.safetensors) into
PyTorch.

The modules below reproduce the executor's Swin Transformer (worker/pipeline/model/) and its
weight-shared variant (worker/pipeline/share/) operation for operation, under the same parameter
names, so that the checkpoint loads strictly and the logits match the executor's. The
safetensors file is read by a small reader of our own (no `safetensors` package needed).

    model = load_compressed_model("result")          # eval mode, on the CPU
    logits = model((images / 255.0 - 0.5) / 0.5)     # images: float N x C x H x W in 0..255

The input normalisation is the one report.json's "input" names (scale, mean, std).
"""

import json
import math
import os
import struct

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SwinTransformer", "SharedSwin", "load_compressed_model", "read_safetensors"]

# Side of the depthwise convolution of the shared model's FFN transform.
_MLP_TRANSFORM_KERNEL = 7
# Layer-norm epsilon of every LayerNorm of the executor's models.
_LAYER_NORM_EPS = 1e-5
_SUPPORTED_FORMAT_VERSION = 1
_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


# ----------------------------------------------------------------------------------------------
# safetensors


def read_safetensors(path):
    """Returns {name: float32 tensor} from a safetensors file holding F32, F16 or BF16 tensors.

    Raises ValueError naming the file (and the tensor) for a truncated or malformed file, an
    unsupported dtype, or a byte range that does not match the shape.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: truncated safetensors file ({len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise ValueError(
            f"{path}: safetensors header length {header_len} runs past the end of the "
            f"{len(data)}-byte file (truncated)")
    try:
        header = json.loads(data[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: safetensors header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{path}: tensor {name}: entry must have exactly dtype, shape and "
                             "data_offsets")
        dtype_name = entry["dtype"]
        if dtype_name not in _DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dtype_name!r} "
                             f"(expected one of {', '.join(_DTYPES)})")
        dtype, item_size = _DTYPES[dtype_name]
        shape = entry["shape"]
        offsets = entry["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)):
            raise ValueError(f"{path}: tensor {name}: malformed shape or data_offsets")
        begin, end = offsets
        if begin < 0 or end < begin or end > len(body):
            raise ValueError(f"{path}: tensor {name}: data_offsets [{begin}, {end}] outside the "
                             f"{len(body)}-byte data section (truncated file?)")
        numel = math.prod(shape)
        if end - begin != numel * item_size:
            raise ValueError(f"{path}: tensor {name}: {end - begin} bytes for shape {shape} of "
                             f"{dtype_name}")
        raw = bytearray(body[begin:end])
        if numel == 0:
            tensor = torch.zeros(shape, dtype=dtype)
        else:
            tensor = torch.frombuffer(raw, dtype=dtype).reshape(shape)
        tensors[name] = tensor.to(torch.float32)
    return tensors


# ----------------------------------------------------------------------------------------------
# config.json


def _require(obj, field, kind, where):
    if field not in obj:
        raise ValueError(f"config: missing field \"{where}{field}\"")
    value = obj[field]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"config: field \"{where}{field}\" must be an integer")
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"config: field \"{where}{field}\" must be a boolean")
    if kind is list and not isinstance(value, list):
        raise ValueError(f"config: field \"{where}{field}\" must be an array")
    return value


def _positive(value, where):
    if value <= 0:
        raise ValueError(f"config: {where} must be positive, got {value}")
    return value


class _Config:
    """The fields of config.json that shape the model (see docs/checkpoints.md)."""

    def __init__(self, json_obj):
        if not isinstance(json_obj, dict):
            raise ValueError("config: must be a JSON object")
        version = _require(json_obj, "format_version", int, "")
        if version != _SUPPORTED_FORMAT_VERSION:
            raise ValueError(f"config: format_version {version} is not supported (expected "
                             f"{_SUPPORTED_FORMAT_VERSION})")
        if json_obj.get("architecture") != "swin":
            raise ValueError("config: field \"architecture\" must be \"swin\"")
        for field in ("image_size", "in_channels", "num_classes", "patch_size", "window_size"):
            setattr(self, field, _positive(_require(json_obj, field, int, ""), field))
        self.qkv_bias = _require(json_obj, "qkv_bias", bool, "")
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"config: image_size {self.image_size} is not divisible by "
                             f"patch_size {self.patch_size}")
        stages = _require(json_obj, "stages", list, "")
        if not stages:
            raise ValueError("config: stages must not be empty")
        self.dims = []
        self.blocks = []  # blocks[s][b] = (num_heads, head_dim, mlp_hidden)
        for s, stage in enumerate(stages):
            where = f"stages[{s}]."
            self.dims.append(_positive(_require(stage, "dim", int, where), where + "dim"))
            blocks = _require(stage, "blocks", list, where)
            if not blocks:
                raise ValueError(f"config: {where}blocks must not be empty")
            widths = []
            for b, block in enumerate(blocks):
                bwhere = f"{where}blocks[{b}]."
                widths.append(tuple(
                    _positive(_require(block, k, int, bwhere), bwhere + k)
                    for k in ("num_heads", "head_dim", "mlp_hidden")))
            self.blocks.append(widths)
            resolution = self.stage_resolution(s)
            if resolution % self.stage_window(s) != 0:
                raise ValueError(f"config: stages[{s}] feature map side {resolution} is not "
                                 f"divisible by window_size {self.window_size}")
        self.sharing = None
        if "sharing" in json_obj:
            self.sharing = _SharingSection(json_obj["sharing"], self)

    def stage_resolution(self, stage):
        resolution = self.image_size // self.patch_size
        for _ in range(stage):
            resolution = (resolution + 1) // 2
        return resolution

    def stage_window(self, stage):
        return min(self.window_size, self.stage_resolution(stage))

    def block_shift(self, stage, block):
        if block % 2 == 0 or self.stage_resolution(stage) <= self.window_size:
            return 0
        return self.window_size // 2


class _SharingSection:
    """config.json's "sharing" section (docs/share.md)."""

    def __init__(self, obj, config):
        if not isinstance(obj, dict):
            raise ValueError("config: sharing must be a JSON object")
        self.attention_transform = _require(obj, "attention_transform", bool, "sharing.")
        self.mlp_transform = _require(obj, "mlp_transform", bool, "sharing.")
        groups = _require(obj, "group_sizes", list, "sharing.")
        if len(groups) != len(config.blocks):
            raise ValueError(f"config: sharing.group_sizes has {len(groups)} stages but the "
                             f"model has {len(config.blocks)}")
        self.group_sizes = []
        for s, sizes in enumerate(groups):
            if (not isinstance(sizes, list) or not sizes
                    or not all(isinstance(g, int) and g > 0 for g in sizes)):
                raise ValueError(f"config: sharing.group_sizes[{s}] must be a non-empty array "
                                 "of positive integers")
            if sum(sizes) != len(config.blocks[s]):
                raise ValueError(f"config: sharing.group_sizes[{s}] sums to {sum(sizes)} but "
                                 f"stage {s} has {len(config.blocks[s])} blocks")
            first = 0
            for g, size in enumerate(sizes):
                for b in range(first, first + size):
                    if config.blocks[s][b] != config.blocks[s][first]:
                        raise ValueError(f"config: sharing.group_sizes[{s}][{g}]: block {b} of "
                                         f"stage {s} has other widths than block {first}")
                first += size
            self.group_sizes.append(list(sizes))


# ----------------------------------------------------------------------------------------------
# Building blocks shared by both architectures


def _layer_norm(dim):
    return nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)


def _relative_position_index(window):
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing="ij"))  # [2, w, w]
    flat = coords.flatten(1)  # [2, N]
    relative = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
    return (relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]).flatten().long()


def _partition_windows(x, window):
    batch, height, width, channels = x.shape
    return (x.view(batch, height // window, window, width // window, window, channels)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(-1, window * window, channels))


def _merge_windows(windows, window, batch, height, width):
    channels = windows.shape[-1]
    return (windows.view(batch, height // window, width // window, window, window, channels)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(batch, height, width, channels))


def _shifted_window_mask(resolution, window, shift):
    regions = torch.zeros(1, resolution, resolution, 1)
    bounds = (0, resolution - window, resolution - shift, resolution)
    label = 0
    for h in range(3):
        for w in range(3):
            regions[:, bounds[h]:bounds[h + 1], bounds[w]:bounds[w + 1], :] = label
            label += 1
    labels = _partition_windows(regions, window).squeeze(-1)  # [nW, N]
    differ = labels.unsqueeze(1) != labels.unsqueeze(2)  # [nW, N, N]
    return torch.zeros(differ.shape).masked_fill(differ, -100.0)


class WindowAttention(nn.Module):
    """attn.{qkv,proj,relative_position_bias_table} of one block (or of a shared group)."""

    def __init__(self, dim, num_heads, head_dim, window, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.window = window
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * head_dim, dim)
        side = 2 * window - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(side * side, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window),
                             persistent=False)

    def relative_position_bias(self):
        tokens = self.window * self.window
        return (self.relative_position_bias_table.index_select(0, self.relative_position_index)
                .view(tokens, tokens, self.num_heads).permute(2, 0, 1).contiguous())

    def forward(self, windows, mask, proj_l=None, proj_w=None):
        batch_windows, tokens, _ = windows.shape
        heads, head_dim = self.num_heads, self.head_dim
        qkv = self.qkv(windows).view(batch_windows, tokens, 3, heads, head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q = qkv[0] * (1.0 / math.sqrt(head_dim))
        k, v = qkv[1], qkv[2]
        logits = q @ k.transpose(-2, -1)  # [B_, h, N, N]
        logits = logits + self.relative_position_bias().unsqueeze(0)
        if proj_l is not None:
            logits = proj_l(logits.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if mask is not None:
            num_windows = mask.shape[0]
            logits = (logits.view(batch_windows // num_windows, num_windows, heads, tokens, tokens)
                      + mask.unsqueeze(1).unsqueeze(0))
            logits = logits.view(batch_windows, heads, tokens, tokens)
        probs = torch.softmax(logits, -1)
        if proj_w is not None:
            probs = proj_w(probs.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        out = (probs @ v).transpose(1, 2).reshape(batch_windows, tokens, heads * head_dim)
        return self.proj(out)


class Mlp(nn.Module):
    """mlp.{fc1,fc2} with the exact (erf) GELU."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim, patch_size):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = _layer_norm(dim)

    def forward(self, images):
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 neighbourhoods concatenated as x(0,0) | x(1,0) | x(0,1) | x(1,1) ((row, column))."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.norm = _layer_norm(4 * in_dim)
        self.reduction = nn.Linear(4 * in_dim, out_dim, bias=False)

    def forward(self, x):
        if x.shape[1] % 2 or x.shape[2] % 2:
            x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        merged = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                            x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(merged))


class ClassifierHead(nn.Module):
    def __init__(self, in_features, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, pooled):
        return self.fc(pooled)


def _attend(x, attention, norm1, window, shift, mask, proj_l=None, proj_w=None):
    """The attention half of a block: x + unshift(attention(windows(shift(norm1(x)))))."""
    batch, height, width, _ = x.shape
    h = norm1(x)
    if shift > 0:
        h = torch.roll(h, (-shift, -shift), (1, 2))
    h = attention(_partition_windows(h, window), mask, proj_l, proj_w)
    h = _merge_windows(h, window, batch, height, width)
    if shift > 0:
        h = torch.roll(h, (shift, shift), (1, 2))
    return x + h


# ----------------------------------------------------------------------------------------------
# The plain Swin Transformer


class SwinBlock(nn.Module):
    def __init__(self, dim, widths, resolution, window, shift, qkv_bias):
        super().__init__()
        num_heads, head_dim, mlp_hidden = widths
        self.window = window
        self.shift = shift
        self.norm1 = _layer_norm(dim)
        self.attn = WindowAttention(dim, num_heads, head_dim, window, qkv_bias)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, mlp_hidden)
        mask = _shifted_window_mask(resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x):
        y = _attend(x, self.attn, self.norm1, self.window, self.shift, self.attn_mask)
        return y + self.mlp(self.norm2(y))


class SwinStage(nn.Module):
    def __init__(self, config, stage):
        super().__init__()
        dim = config.dims[stage]
        self.downsample = PatchMerging(config.dims[stage - 1], dim) if stage > 0 else None
        self.blocks = nn.ModuleList(
            SwinBlock(dim, widths, config.stage_resolution(stage), config.stage_window(stage),
                      config.block_shift(stage, b), config.qkv_bias)
            for b, widths in enumerate(config.blocks[stage]))

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class _Backbone(nn.Module):
    """Patch embedding, the stages built by `stage_type(config, index)`, norm and head."""

    def __init__(self, config, stage_type):
        super().__init__()
        self.patch_embed = PatchEmbed(config.in_channels, config.dims[0], config.patch_size)
        self.layers = nn.ModuleList(stage_type(config, s) for s in range(len(config.dims)))
        self.norm = _layer_norm(config.dims[-1])
        self.head = ClassifierHead(config.dims[-1], config.num_classes)

    def forward(self, images):
        x = self.patch_embed(images)
        for stage in self.layers:
            x = stage(x)
        return self.head(self.norm(x).mean((1, 2)))


class SwinTransformer(_Backbone):
    """The executor's Swin Transformer (timm >= 0.9 names) with per-block widths."""

    def __init__(self, config):
        super().__init__(config, SwinStage)


# ----------------------------------------------------------------------------------------------
# The weight-shared Swin (MiniViT weight multiplexing)


class SharedBlockWeights(nn.Module):
    def __init__(self, dim, widths, window, qkv_bias):
        super().__init__()
        num_heads, head_dim, mlp_hidden = widths
        self.attn = WindowAttention(dim, num_heads, head_dim, window, qkv_bias)
        self.mlp = Mlp(dim, mlp_hidden)


class MlpTransform(nn.Module):
    """x + DepthwiseConv7x7(LayerNorm(x)) on the token grid [B, H, W, C]."""

    def __init__(self, dim):
        super().__init__()
        self.norm = _layer_norm(dim)
        self.conv = nn.Conv2d(dim, dim, _MLP_TRANSFORM_KERNEL, padding=_MLP_TRANSFORM_KERNEL // 2,
                              groups=dim)

    def forward(self, x):
        h = self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + h


class SharedPass(nn.Module):
    """One block of the unshared model, run through its group's shared weights."""

    def __init__(self, dim, num_heads, resolution, window, shift, attention_transform,
                 mlp_transform):
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = _layer_norm(dim)
        self.proj_l = nn.Linear(num_heads, num_heads) if attention_transform else None
        self.proj_w = nn.Linear(num_heads, num_heads) if attention_transform else None
        self.mlp_transform = MlpTransform(dim) if mlp_transform else None
        self.norm2 = _layer_norm(dim)
        mask = _shifted_window_mask(resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x, shared):
        y = _attend(x, shared.attn, self.norm1, self.window, self.shift, self.attn_mask,
                    self.proj_l, self.proj_w)
        if self.mlp_transform is not None:
            y = self.mlp_transform(y)
        return y + shared.mlp(self.norm2(y))


class SharedGroup(nn.Module):
    def __init__(self, config, stage, first, size):
        super().__init__()
        dim = config.dims[stage]
        widths = config.blocks[stage][first]
        sharing = config.sharing
        self.shared = SharedBlockWeights(dim, widths, config.stage_window(stage), config.qkv_bias)
        self.passes = nn.ModuleList(
            SharedPass(dim, widths[0], config.stage_resolution(stage), config.stage_window(stage),
                       config.block_shift(stage, first + p), sharing.attention_transform,
                       sharing.mlp_transform)
            for p in range(size))

    def forward(self, x):
        for one_pass in self.passes:
            x = one_pass(x, self.shared)
        return x


class SharedStage(nn.Module):
    def __init__(self, config, stage):
        super().__init__()
        self.downsample = (PatchMerging(config.dims[stage - 1], config.dims[stage])
                           if stage > 0 else None)
        groups = []
        first = 0
        for size in config.sharing.group_sizes[stage]:
            groups.append(SharedGroup(config, stage, first, size))
            first += size
        self.groups = nn.ModuleList(groups)

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        for group in self.groups:
            x = group(x)
        return x


class SharedSwin(_Backbone):
    """The executor's weight-shared Swin (names in docs/share.md)."""

    def __init__(self, config):
        super().__init__(config, SharedStage)


# ----------------------------------------------------------------------------------------------
# Loading


def _load_strictly(model, tensors, path):
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = [f"{name} (file {list(tensors[name].shape)}, model "
                   f"{list(expected[name].shape)})"
                   for name in sorted(set(expected) & set(tensors))
                   if tensors[name].shape != expected[name].shape]
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing[:10]))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(unexpected[:10]))
    if wrong_shape:
        problems.append("shape mismatches: " + ", ".join(wrong_shape[:10]))
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    model.load_state_dict(tensors, strict=True)


def load_compressed_model(directory):
    """Builds the model that `directory`/config.json describes (the plain Swin, or the shared one
    when config.json has a "sharing" section) and loads `directory`/model.safetensors strictly.

    Returns the model in eval mode on the CPU, taking float images N x C x H x W normalised as
    report.json's "input" says. Raises ValueError for an invalid config.json, a malformed or
    truncated safetensors file, or a missing, unexpected or wrongly shaped tensor (named);
    OSError when a file cannot be read.
    """
    config_path = os.path.join(directory, "config.json")
    weights_path = os.path.join(directory, "model.safetensors")
    with open(config_path, "r", encoding="utf-8") as f:
        try:
            config_json = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path}: not valid JSON: {error}") from None
    config = _Config(config_json)
    model = SharedSwin(config) if config.sharing is not None else SwinTransformer(config)
    _load_strictly(model, read_safetensors(weights_path), weights_path)
    return model.eval()
