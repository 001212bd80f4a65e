#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into corpus/<target>/ (run from anywhere).

Small valid inputs and near-valid ones, one mutation away from a check of the reader: the fuzzer
starts from them instead of from nothing. The committed files are this script's output. Inputs that
crashed a reader are kept as regression seeds named crash-*: those written here are rewritten, and
any other crash-* file added by hand is left alone.
"""
import gzip
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def clear(target):
    folder = os.path.join(CORPUS, target)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if not name.startswith("crash-"):
                os.remove(os.path.join(folder, name))


def job_spec():
    t = "job_spec_fuzzer"
    clear(t)
    with open(os.path.join(HERE, "..", "client", "examples", "tiny-synthetic-job.json")) as f:
        write(t, "tiny_synthetic.json", f.read())
    full = {
        "model": {"preset": "swin_micro", "num_classes": 10},
        "dataset": {"format": "fashion_mnist", "path": "/usr/share/datasets/fashion-mnist",
                    "image_size": 32, "limit_train": 1000, "augment": True, "flip": False},
        "teacher": {"checkpoint_path": "/data/teacher.safetensors", "naming": "timm"},
        "share": {"enabled": True, "group_size": [2, 2], "init": "mean", "temperature": 2.0,
                  "train": {"epochs": 1, "lr": 0.0005}},
        "prune": {"enabled": True, "target_macs_reduction": 0.32, "importance": "l2",
                  "round_to": 8, "ranking": "local", "attention": "head_dims"},
        "distill": {"enabled": True, "train": {"epochs": 2, "batch_size": 32},
                    "temperature": 4, "alpha": 0.5, "cache_teacher_logits": False},
        "resources": {"device": "cuda:0", "threads": 2, "time_limit_seconds": "3600",
                      "seed": "-5"},
    }
    write(t, "full.json", json.dumps(full))
    camel = {"model": {"preset": "swin_t"},
             "dataset": {"format": "cifar10", "path": "/data/cifar", "limitTrain": 10},
             "teacher": {"blobSha256": "ab" * 32},
             "prune": {"enabled": True, "targetMacsReduction": 0.5, "iterativeSteps": 3},
             "resources": {"timeLimitSeconds": "60"}}
    write(t, "camel_case.json", json.dumps(camel))
    # Near-valid: each fails one check.
    write(t, "bad_reduction.json", json.dumps(
        {"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
         "prune": {"target_macs_reduction": 1.5}}))
    write(t, "unknown_field.json", json.dumps(
        {"dataset": {"format": "synthetic", "colour": 1}, "teacher": {"train": {"epochs": 1}}}))
    write(t, "heads_mismatch.json", json.dumps(
        {"model": {"config": {"image_size": 16, "in_channels": 1, "patch_size": 3,
                              "embed_dim": 8, "depths": [1, 1], "num_heads": [1],
                              "window_size": 4}},
         "dataset": {"format": "synthetic"}, "teacher": {"train": {"max_steps": 1}}}))
    write(t, "int64_string.json", json.dumps(
        {"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
         "resources": {"seed": "9223372036854775808"}}))
    write(t, "not_object.json", "[1, 2, {\"model\": null}]")


def events():
    t = "event_fuzzer"
    clear(t)
    lines = {
        "phase_started": {"type": "phase_started", "time": 1.7e9, "phase": "teacher"},
        "phase_finished": {"type": "phase_finished", "time": 1.7e9, "phase": "prune",
                           "wall_seconds": 12.5, "values": {"macs": 1.2e8, "acc": None}},
        "metric": {"type": "metric", "time": 1.7e9, "phase": "distill", "step": 42,
                   "epoch": 0.5, "progress": 0.25, "values": {"loss": 1.5, "lr": 0.001}},
        "log": {"type": "log", "time": 1.7e9, "level": "info", "message": "epoch 1\tdone \u00e9"},
        "artifact": {"type": "artifact", "time": 1.7e9, "name": "model.safetensors",
                     "path": "/work/out/model.safetensors", "sha256": "0" * 64,
                     "size_bytes": 123456},
        "report": {"type": "report", "time": 1.7e9,
                   "report": {"phases": [{"name": "prune", "macs": [1, 2.5, None]}],
                              "ok": True}},
        "error": {"type": "error", "time": 1.7e9, "code": "INVALID_ARGUMENT",
                  "message": "spec.prune.round_to: must be in [1, 1024], got 0"},
        # Near-valid ones.
        "unknown_type": {"type": "metrics", "phase": "x"},
        "missing_phase": {"type": "metric", "step": 1},
        "bad_value": {"type": "metric", "phase": "x", "values": {"loss": "high"}},
        "bad_step": {"type": "metric", "phase": "x", "step": 1.5},
    }
    for name, line in lines.items():
        write(t, name + ".jsonl", json.dumps(line) + "\n")
    write(t, "truncated.jsonl", '{"type": "log", "message": "cut')
    # Regression: copying a report nested this deep overflowed the stack of Parse (under ASan;
    # 200000 levels without it). Parse now refuses nesting past 100 levels.
    depth = 50000
    write(t, "crash-deep-report",
          '{"type":"report","report":' + "[" * depth + "]" * depth + "}\n")


def idx_input(limit, labels, images):
    return struct.pack("<BH", limit, len(labels)) + labels + images


def idx_files(count, rows, cols, label_base=0):
    images = struct.pack(">IIII", 0x803, count, rows, cols)
    images += bytes((i * 7 + y * 3 + x) % 256 for i in range(count) for y in range(rows)
                    for x in range(cols))
    labels = struct.pack(">II", 0x801, count) + bytes((label_base + i) % 10 for i in range(count))
    return labels, images


def idx():
    t = "idx_reader_fuzzer"
    clear(t)
    labels, images = idx_files(3, 4, 5)
    write(t, "raw_3x4x5", idx_input(0, labels, images))
    write(t, "raw_limit_2", idx_input(2, labels, images))
    write(t, "gzip_3x4x5", idx_input(0, gzip.compress(labels, mtime=0),
                                     gzip.compress(images, mtime=0)))
    write(t, "gzip_labels_only", idx_input(1, gzip.compress(labels, mtime=0), images))
    write(t, "truncated_images", idx_input(0, labels, images[:-3]))
    write(t, "truncated_gzip", idx_input(0, labels, gzip.compress(images, mtime=0)[:20]))
    bad_labels, _ = idx_files(3, 4, 5, label_base=8)
    write(t, "label_10", idx_input(0, bad_labels[:-1] + b"\x0a", images))
    write(t, "count_mismatch", idx_input(0, idx_files(2, 4, 5)[0], images))
    write(t, "bad_magic", idx_input(0, labels, b"\x00\x00\x08\x01" + images[4:]))
    write(t, "zero_rows", idx_input(0, labels, struct.pack(">IIII", 0x803, 3, 0, 5)))


def cifar_batch(count, first=0):
    out = b""
    for i in range(first, first + count):
        out += bytes([i % 10])
        out += bytes((i * 7 + c * 50 + y * 3 + x) % 256 for c in range(3) for y in range(32)
                     for x in range(32))
    return out


def cifar():
    t = "cifar_reader_fuzzer"
    clear(t)
    write(t, "one_record", b"\x00" + cifar_batch(1))
    write(t, "two_records_limit_3", b"\x03" + cifar_batch(2, first=4))
    write(t, "two_records_limit_1", b"\x01" + cifar_batch(2))
    write(t, "truncated", b"\x00" + cifar_batch(1)[:-1])
    bad = bytearray(cifar_batch(2))
    bad[3073] = 12
    write(t, "label_12", b"\x00" + bytes(bad))
    write(t, "empty", b"\x00")
    names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"
    write(t, "meta", b"\x00" + names.encode())
    write(t, "meta_crlf_blank", b"\x00" + names.replace("\n", "\r\n").replace("cat", "\n cat ")
          .encode())


def safetensors(header, data):
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_corpus():
    t = "safetensors_fuzzer"
    clear(t)
    f32 = struct.pack("<6f", 1, -2, 3.5, 0, float("inf"), -0.0)
    write(t, "f32_2x3", safetensors(
        {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}, f32))
    mixed = {
        "__metadata__": {"format": "pt", "note": "seed"},
        "a.weight": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
        "a.bias": {"dtype": "BF16", "shape": [1], "data_offsets": [4, 6]},
        "idx": {"dtype": "I64", "shape": [1], "data_offsets": [6, 14]},
        "mask": {"dtype": "BOOL", "shape": [2], "data_offsets": [14, 16]},
        "empty": {"dtype": "I32", "shape": [0, 4], "data_offsets": [16, 16]},
        "scalar": {"dtype": "U8", "shape": [], "data_offsets": [16, 17]},
    }
    data = struct.pack("<2e", 1.0, -0.5) + b"\x80\x3f" + struct.pack("<q", -7) + b"\x01\x00" + \
        b"\xff"
    write(t, "mixed_dtypes", safetensors(mixed, data))
    write(t, "empty_header", safetensors({}, b""))
    # Near-valid ones.
    write(t, "overlap", safetensors(
        {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
         "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"abc"))
    write(t, "hole", safetensors(
        {"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"ab"))
    write(t, "shape_mismatch", safetensors(
        {"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8))
    write(t, "unknown_dtype", safetensors(
        {"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"))
    write(t, "huge_dims", safetensors(
        {"a": {"dtype": "U8", "shape": [0, 9223372036854775807, 4], "data_offsets": [0, 0]}},
        b""))
    good = safetensors({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}, f32)
    write(t, "header_length_past_end", b"\xff\x00\x00\x00\x00\x00\x00\x00" + good[8:])
    write(t, "truncated_length", good[:5])


def main():
    os.makedirs(CORPUS, exist_ok=True)
    job_spec()
    events()
    idx()
    cifar()
    safetensors_corpus()


if __name__ == "__main__":
    main()
