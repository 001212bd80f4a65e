"""compressd_client.torch_loader against the executor's own output.

    test_torch_loader.py --executor=PATH [unittest args]

Runs compress-run on two tiny synthetic jobs (a plain one: prune + distill; a shared one: share +
prune + distill), loads each DIR/result in PyTorch and checks that its top-1 and loss on the
synthetic validation split (regenerated bit for bit by synthetic_data.py) equal report.json's
final ones (top-1 exactly, the loss to 2e-6). Also checks that malformed checkpoints are
rejected with ValueError naming the file or the tensor.
"""

import argparse
import copy
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import torch

import synthetic_data
from compressd_client.torch_loader import SharedSwin, SwinTransformer, load_compressed_model
from compressd_client.torch_loader import read_safetensors

ARGS = None  # the executor, from the command line

SEED = 7
VAL_SIZE = 64
NUM_CLASSES = 4
IMAGE_SIZE = 16
CHANNELS = 1

# The executor test's tiny spec (tests/run/compress_run_test.cc, TinySpec): about 10 s on a CPU.
TINY_SPEC = {
    "model": {"config": {"image_size": IMAGE_SIZE, "in_channels": CHANNELS, "patch_size": 2,
                         "embed_dim": 16, "depths": [2, 2], "num_heads": [2, 4],
                         "window_size": 4}},
    "dataset": {"format": "synthetic", "synthetic_train": 256, "synthetic_val": VAL_SIZE,
                "synthetic_classes": NUM_CLASSES},
    "teacher": {"train": {"epochs": 8, "batch_size": 16, "lr": 0.005}},
    "resources": {"device": "cpu", "threads": 1, "seed": SEED},
}
PRUNE = {"enabled": True, "target_macs_reduction": 0.32, "importance": "taylor", "round_to": 4,
         "calibration_batches": 4}
DISTILL = {"enabled": True, "train": {"epochs": 3, "batch_size": 16, "lr": 0.002}}
SHARE = {"enabled": True, "train": {"epochs": 2, "batch_size": 16, "lr": 0.002}}


def run_executor(spec, workdir):
    """Runs compress-run on `spec` in `workdir`; returns report.json."""
    os.makedirs(workdir)
    spec_path = os.path.join(workdir, "..", os.path.basename(workdir) + "-spec.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    done = subprocess.run([ARGS.executor, "--spec", spec_path, "--workdir", workdir],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                          check=False)
    if done.returncode != 0:
        raise AssertionError(f"compress-run exited with {done.returncode}:\n"
                             f"{done.stdout.decode()[-2000:]}\n{done.stderr.decode()[-2000:]}")
    with open(os.path.join(workdir, "report.json"), encoding="utf-8") as f:
        return json.load(f)


def write_safetensors(path, tensors, dtype_name):
    """A safetensors file of `tensors` (float) stored as `dtype_name` (F32, F16 or BF16)."""
    dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype_name]
    header, chunks, offset = {}, [], 0
    for name, tensor in tensors.items():
        raw = tensor.to(dtype).contiguous().view(torch.uint8).numpy().tobytes() \
            if tensor.numel() else b""
        header[name] = {"dtype": dtype_name, "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


class TorchLoaderTest(unittest.TestCase):
    tmp = None
    plain_dir = None
    shared_dir = None
    plain_report = None
    shared_report = None
    val_images = None
    val_labels = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="torch_loader_test_")
        plain = copy.deepcopy(TINY_SPEC)
        plain.update({"prune": PRUNE, "distill": DISTILL})
        shared = copy.deepcopy(plain)
        shared["share"] = SHARE
        cls.plain_dir = os.path.join(cls.tmp, "plain")
        cls.shared_dir = os.path.join(cls.tmp, "shared")
        cls.plain_report = run_executor(plain, cls.plain_dir)
        cls.shared_report = run_executor(shared, cls.shared_dir)
        pixels, labels = synthetic_data.make_split(NUM_CLASSES, CHANNELS, IMAGE_SIZE, VAL_SIZE,
                                                   SEED, stream=2)
        cls.val_images = torch.tensor(pixels, dtype=torch.float32).view(
            VAL_SIZE, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
        cls.val_labels = torch.tensor(labels)

    @classmethod
    def tearDownClass(cls):
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def evaluate(self, model, report):
        """(top-1, mean cross-entropy) on the validation split, normalised as report says."""
        scale = report["input"]["scale"]
        mean = report["input"]["mean"]
        std = report["input"]["std"]
        with torch.no_grad():
            logits = model((self.val_images * scale - mean) / std)
        top1 = (logits.argmax(1) == self.val_labels).float().mean().item()
        loss = torch.nn.functional.cross_entropy(logits, self.val_labels).item()
        return top1, loss

    def check_matches_report(self, directory, report, expected_type):
        model = load_compressed_model(os.path.join(directory, "result"))
        self.assertIsInstance(model, expected_type)
        self.assertFalse(model.training)
        final = report["final"]
        self.assertEqual(report["dataset"]["val_samples"], VAL_SIZE)
        top1, loss = self.evaluate(model, report)
        self.assertEqual(top1, final["top1"])
        # The executor evaluates in float32 too: the same ops give the same loss up to the order
        # of reductions (an approximate GELU alone would move it by about 1e-5).
        self.assertAlmostEqual(loss, final["val_loss"], delta=2e-6)
        self.assertEqual(sum(p.numel() for p in model.parameters()), final["params"])
        return model

    def test_plain_model_matches_the_report(self):
        self.assertFalse(self.plain_report["final"]["shared"])
        self.assertEqual(self.plain_report["final"]["name"], "distill")
        self.check_matches_report(self.plain_dir, self.plain_report, SwinTransformer)

    def test_shared_model_matches_the_report(self):
        self.assertTrue(self.shared_report["final"]["shared"])
        self.assertEqual(self.shared_report["final"]["name"], "distill")
        self.check_matches_report(self.shared_dir, self.shared_report, SharedSwin)

    def copy_result(self, name):
        target = os.path.join(self.tmp, name)
        shutil.copytree(os.path.join(self.plain_dir, "result"), target)
        return target

    def test_half_precision_files_load(self):
        original = read_safetensors(os.path.join(self.plain_dir, "result", "model.safetensors"))
        for dtype_name, dtype in (("F16", torch.float16), ("BF16", torch.bfloat16)):
            target = self.copy_result("half-" + dtype_name)
            write_safetensors(os.path.join(target, "model.safetensors"), original, dtype_name)
            state = load_compressed_model(target).state_dict()
            for name, tensor in original.items():
                self.assertTrue(torch.equal(state[name], tensor.to(dtype).float()), name)

    def test_truncated_safetensors_is_rejected(self):
        target = self.copy_result("truncated")
        path = os.path.join(target, "model.safetensors")
        with open(path, "rb") as f:
            data = f.read()
        for length in (5, 8 + 10, len(data) - 4):
            with open(path, "wb") as f:
                f.write(data[:length])
            with self.assertRaises(ValueError, msg=f"{length} bytes") as caught:
                load_compressed_model(target)
            self.assertIn("model.safetensors", str(caught.exception))

    def test_wrong_width_is_rejected_naming_the_tensor(self):
        target = self.copy_result("wrong-width")
        path = os.path.join(target, "config.json")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        config["stages"][0]["blocks"][0]["mlp_hidden"] += 4
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        with self.assertRaises(ValueError) as caught:
            load_compressed_model(target)
        self.assertIn("layers.0.blocks.0.mlp.fc1.weight", str(caught.exception))

    def test_missing_and_unexpected_tensors_are_named(self):
        target = self.copy_result("renamed")
        path = os.path.join(target, "model.safetensors")
        tensors = read_safetensors(path)
        tensors["head.weight"] = tensors.pop("head.fc.weight")
        write_safetensors(path, tensors, "F32")
        with self.assertRaises(ValueError) as caught:
            load_compressed_model(target)
        self.assertIn("missing tensors: head.fc.weight", str(caught.exception))
        self.assertIn("unexpected tensors: head.weight", str(caught.exception))


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--executor", required=True)
    ARGS, rest = parser.parse_known_args()
    if not os.access(ARGS.executor, os.X_OK):
        sys.exit(f"--executor={ARGS.executor}: not an executable")
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
