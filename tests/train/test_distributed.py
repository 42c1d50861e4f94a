"""Data-parallel training through torchrun on CPU (gloo, 2 processes): the same model as one
process, exact resume, DCP resharding, clear errors. Each run is a few seconds on 2 cores."""

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from torch.torch_version import TorchVersion

from slimtext.train.distributed import PP_MIN_TORCH

pytestmark = pytest.mark.distributed
# pp's cases run where torch's pipelining can carry our stages (the GPU machine had 2.11)
PP_OK = TorchVersion(torch.__version__) >= PP_MIN_TORCH
needs_pp = pytest.mark.skipif(not PP_OK, reason=f"pipelining needs torch >= {PP_MIN_TORCH}")

TINY = [
    "--epochs",
    "2",
    "--precision",
    "fp32",
    "--seed",
    "3",
    "--model",
    "transformer",
    "--hidden-size",
    "32",
    "--num-layers",
    "2",
    "--num-heads",
    "2",
    "--ffn-size",
    "64",
    "--vocab-size",
    "400",
    "--max-length",
    "32",
    "--no-progress",
    "--device",
    "cpu",
]  # fmt: skip  (gloo ranks: a one-GPU machine has no GPU for rank 1)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory, toy_data):
    path = tmp_path_factory.mktemp("dist") / "train.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(*toy_data, strict=True))
    return path


# Python and C++ stacks of a rank that crashes, in the captured stderr.
ENV = {**os.environ, "SLIMTEXT_DIST_TIMEOUT": "120", "PYTHONFAULTHANDLER": "1",
       "TORCH_SHOW_CPP_STACKTRACES": "1"}  # fmt: skip


def run_torchrun(cmd: list, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def slimtext(*args, nproc=0, timeout=240, background=False):
    cmd = ([*TORCHRUN, f"--nproc-per-node={nproc}", "-m", "slimtext"] if nproc
           else [sys.executable, "-m", "slimtext"]) + list(map(str, args))  # fmt: skip
    if background:  # own session, so the test can kill the launcher and every rank at once
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    r = run_torchrun(cmd, timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def counted(model_dir):
    """(samples, real tokens) trained on, as the run reports them: every rank's, once."""
    t = json.loads((model_dir / "metrics.json").read_text())["training"]
    return t["samples"], t["tokens"]


def test_ddp_and_fsdp_on_two_ranks_train_the_single_process_model(tmp_path, train_csv):
    # Per-rank batch B/2 on 2 ranks == batch B in one process: the same examples in every step
    # (see bucketed_batches). Without dropout the weights agree to float32 rounding.
    common = ["train", "--data", train_csv, "--dropout", "0", *TINY]
    slimtext(*common, "--out", tmp_path / "single", "--batch-size", 8)
    slimtext(*common, "--out", tmp_path / "ddp", "--batch-size", 4, "--nproc", 2)
    # with --cpu-offload: on CPU it must not pin memory (that needs a GPU)
    slimtext(*common, "--out", tmp_path / "fsdp", "--batch-size", 4, "--strategy", "fsdp",
             "--cpu-offload", nproc=2)  # fmt: skip
    ref = weights(tmp_path / "single")
    assert max_diff(ref, weights(tmp_path / "ddp")) < 1e-5
    assert max_diff(ref, weights(tmp_path / "fsdp")) < 1e-5
    # exact figures: the last global batch has 1 row, which the second rank repeats
    assert counted(tmp_path / "ddp") == counted(tmp_path / "fsdp") == counted(tmp_path / "single")


def test_ddp_with_grad_accum_and_a_short_last_step_trains_the_single_process_model(
    tmp_path, train_csv
):
    # 81 rows in steps of 2 ranks x 2 rows x 6 micro-batches: the last step has 9 rows. Cut
    # 2+2+2+1+1+1, rank 1 repeated each 1-row micro-batch and the loss counted the repeats
    # (those rows weighed double); cut into micro-batches of 2 rows or more, it is the
    # single-process step. Class weights weigh rows, wherever they land. Also: a typed
    # --epochs beside --max-steps is noted once, not by the launcher and again by rank 0.
    common = ["train", "--data", train_csv, "--dropout", "0", "--grad-accum", 6,
              "--class-weight", "money=3,tech=0.5", *TINY]  # fmt: skip
    slimtext(*common, "--out", tmp_path / "single", "--batch-size", 4)
    r = slimtext(*common, "--out", tmp_path / "ddp", "--batch-size", 2, "--nproc", 2)
    assert max_diff(weights(tmp_path / "single"), weights(tmp_path / "ddp")) < 1e-5
    assert counted(tmp_path / "ddp") == counted(tmp_path / "single")
    assert "is ignored" not in r.stderr, r.stderr  # --epochs typed, no --max-steps: quiet
    r = slimtext(*common, "--out", tmp_path / "steps", "--batch-size", 2, "--max-steps", 1,
                 "--nproc", 2)  # fmt: skip
    assert r.stderr.count("note: --epochs 2 is ignored: --max-steps 1") == 1, r.stderr


@needs_pp
def test_pp_and_uneven_ddp_batches_train_the_single_process_model(tmp_path, train_csv):
    # 81 training rows in global batches of 6: the last has 3 rows, split 2/1 over two ddp
    # ranks, and cut into 4 pipeline micro-batches (uneven, one empty). Each rank's loss is its
    # share of the global batch, each micro-batch's its share of the batch: same gradients.
    common = ["train", "--data", train_csv, "--dropout", "0", *TINY]
    slimtext(*common, "--out", tmp_path / "single", "--batch-size", 6)
    slimtext(*common, "--out", tmp_path / "ddp", "--batch-size", 3, "--nproc", 2)
    slimtext(*common, "--out", tmp_path / "pp", "--batch-size", 6, "--strategy", "pp",
             "--microbatches", 4, "--checkpoint-every", 5, nproc=2)  # fmt: skip
    ref = weights(tmp_path / "single")
    assert max_diff(ref, weights(tmp_path / "ddp")) < 1e-5
    assert max_diff(ref, weights(tmp_path / "pp")) < 1e-5
    # pp's DCP checkpoint (optimizer state flattened, as every strategy now writes it) resumes
    # in one process
    first = sorted((tmp_path / "pp.checkpoints").glob("step-*"))[0]
    one = tmp_path / "one.checkpoints"
    one.mkdir()
    shutil.copytree(first, one / first.name)
    shutil.copy(tmp_path / "pp.checkpoints" / "tokenizer.json", one / "tokenizer.json")
    slimtext(*common, "--out", tmp_path / "one", "--batch-size", 6, "--resume")
    assert max_diff(ref, weights(tmp_path / "one")) < 1e-5
    # exact figures, not rank 0's tokens times the ranks: the ddp ranks' rows differ in length
    n = counted(tmp_path / "single")
    assert counted(tmp_path / "ddp") == counted(tmp_path / "pp") == counted(tmp_path / "one") == n


def test_nproc_in_a_config_file_launches_once(tmp_path, train_csv):
    # Each rank re-reads the YAML: it must not launch torchrun again (it did, without end).
    cfg = tmp_path / "c.yaml"
    cfg.write_text("nproc: 2\nmax_steps: 2\n")
    slimtext("train", "--data", train_csv, "--out", tmp_path / "m", "--config", cfg,
             "--batch-size", 4, *TINY, timeout=120)  # fmt: skip
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_more_ranks_than_gpus_is_one_clear_error(monkeypatch, tmp_path, train_csv):
    # Rank 1 of `--nproc 2` on a one-GPU machine died in cuda.set_device ("invalid device
    # ordinal"); NCCL cannot put two ranks on one GPU either.
    from typer.testing import CliRunner

    from slimtext import cli
    from slimtext.train import distributed as d

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    msg = "2 ranks on this node but 1 CUDA device: one rank per GPU; use --nproc 1"
    with pytest.raises(d.DistributedError, match=msg):
        d.check_node_devices(2, "auto")
    d.check_node_devices(1, "cuda")  # these are fine
    d.check_node_devices(4, "cpu")
    # the launcher says it once, before starting any rank
    r = CliRunner().invoke(cli.app, ["train", "--data", str(train_csv), "--out",
                                     str(tmp_path / "m"), "--nproc", "2"])  # fmt: skip
    assert r.exit_code == 2 and msg in r.output, r.output
    assert not (tmp_path / "m").exists()
    # and a rank started by torchrun itself says it too
    monkeypatch.setattr(d, "_stop_with_launcher", lambda: None)
    for k, v in dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2").items():
        monkeypatch.setenv(k, v)
    with pytest.raises(d.DistributedError, match=msg):
        d.init_distributed("ddp", "auto")


def test_pp_on_a_torch_too_old_for_it_is_a_clear_error(monkeypatch, tmp_path, train_csv):
    # torch 2.11's pipelining failed inside its schedule on the integer attention mask
    from slimtext.train import distributed as d

    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    for k, v in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0").items():
        monkeypatch.setenv(k, v)
    with pytest.raises(d.DistributedError, match=r"pp needs torch >= 2\.13 \(this is 2\.11"):
        d.init_distributed("pp", "cpu")
    # and the --nproc launcher says it once, before starting any rank
    from typer.testing import CliRunner

    from slimtext import cli

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k)
    args = ["train", "--data", str(train_csv), "--out", str(tmp_path / "m"), "--nproc", "2"]
    r = CliRunner().invoke(cli.app, [*args, "--strategy", "pp"])
    assert r.exit_code == 2 and "pp needs torch >= 2.13" in r.output, r.output
    assert "rank" not in r.output and not (tmp_path / "m").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_ranks_without_a_gpu_are_an_error_not_cpu_ranks(monkeypatch, tmp_path, train_csv):
    from typer.testing import CliRunner

    from slimtext import cli
    from slimtext.train import distributed as d

    # the launcher says so before it starts any rank (it started two, each saying it)
    args = ["train", "--data", str(train_csv), "--out", str(tmp_path / "m"), "--nproc", "2"]
    r = CliRunner().invoke(cli.app, [*args, "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA device" in r.output and "rank" not in r.output, r.output
    # and a rank of torchrun's own (it trained on CPU, with gloo)
    monkeypatch.setattr(d, "_stop_with_launcher", lambda: None)
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0").items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="no CUDA device"):
        d.init_distributed("ddp", "cuda:0")


TP_SNAPSHOT = """
import torch
from slimtext.models import ModelConfig, build_model
from slimtext.train.distributed import full_state_dict, init_distributed, shutdown, wrap_model

ctx = init_distributed("tp", "cpu")
torch.manual_seed(0)
cfg = ModelConfig(vocab_size=50, num_labels=2, hidden_size=16, num_layers=1, num_heads=2,
                  ffn_size=32, max_length=8)
model = wrap_model(build_model(cfg), ctx, "fp32", tp_size=ctx.world_size)
snap = full_state_dict(model, ctx)  # what keep-best stores
copy = {k: v.clone() for k, v in snap.items()}
opt = torch.optim.SGD(model.parameters(), lr=1.0)
ids = torch.randint(5, 50, (2, 8))
model(ids, torch.ones_like(ids, dtype=torch.bool)).sum().backward()
opt.step()
after = full_state_dict(model, ctx)
if ctx.is_main:
    assert any(not torch.equal(after[k], copy[k]) for k in copy), "the step changed nothing"
    moved = [k for k in copy if not torch.equal(snap[k], copy[k])]
    assert not moved, f"the snapshot followed training: {moved}"
shutdown(ctx)
"""


def test_a_tp_weight_snapshot_does_not_follow_training(tmp_path):
    # keep-best under tp stored live tensors for the replicated parameters: the "best" model
    # written at the end was a mix of the best and the latest weights.
    script = tmp_path / "snap.py"
    script.write_text(TP_SNAPSHOT)
    r = run_torchrun([*TORCHRUN, "--nproc-per-node=2", str(script)], timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


EXIT_AFTER_TP = """
import torch
from slimtext.models import ModelConfig, build_model
from slimtext.train.distributed import full_state_dict, init_distributed, shutdown, wrap_model

ctx = init_distributed("tp", "cpu")
cfg = ModelConfig(vocab_size=50, num_labels=2, hidden_size=16, num_layers=1, num_heads=2,
                  ffn_size=32, max_length=8)
model = wrap_model(build_model(cfg), ctx, "fp32", tp_size=ctx.world_size)
full_state_dict(model, ctx)
shutdown(ctx)  # and exit at once, while gloo's threads may still hold the last tensors
"""


def test_tp_ranks_exit_cleanly_after_shutdown(tmp_path):
    # DTensor keeps gloo's worker threads alive past destroy_process_group; one that still had
    # to free a tensor when the interpreter began finalising aborted the rank (SIGABRT,
    # "terminate called without an active exception") in ~40% of such runs. Five in a row.
    script = tmp_path / "exit.py"
    script.write_text(EXIT_AFTER_TP)
    for i in range(5):
        r = run_torchrun([*TORCHRUN, "--nproc-per-node=2", str(script)], timeout=120)
        assert r.returncode == 0, f"run {i}: {r.stderr[-3000:]}"


def test_ddp_with_sparse_embedding_tables_trains_the_single_process_model(tmp_path, train_csv):
    # The attention model's hashed n-gram table, and with --sparse-embeddings its token table,
    # have sparse gradients under DDP too (gloo all-reduces them); SparseAdam then updates the
    # same rows on every rank.
    common = ["train", "--data", train_csv, "--dropout", "0", *TINY, "--model", "attention",
              "--num-layers", "0", "--ngram-buckets", "4096", "--embeddings", "bag",
              "--sparse-embeddings"]  # fmt: skip
    slimtext(*common, "--out", tmp_path / "single", "--batch-size", 8)
    slimtext(*common, "--out", tmp_path / "ddp", "--batch-size", 4, "--nproc", 2)
    assert max_diff(weights(tmp_path / "single"), weights(tmp_path / "ddp")) < 1e-5


def test_ddp_sigkill_then_resume_gives_bitwise_the_uninterrupted_weights(tmp_path, train_csv):
    args = ["train", "--data", train_csv, "--batch-size", 4, "--checkpoint-every", 2, *TINY]
    slimtext(*args, "--out", tmp_path / "ref", nproc=2)
    out, ckpts = tmp_path / "killed", tmp_path / "killed.checkpoints"
    proc = slimtext(*args, "--out", out, nproc=2, background=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and len([p for p in ckpts.glob("step-*")]) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-run
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it was killed"
    slimtext(*args, "--out", out, "--resume", nproc=2)
    a, b = weights(tmp_path / "ref"), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_dcp_checkpoint_from_two_ranks_resumes_on_one_and_back(tmp_path, train_csv):
    common = ["train", "--data", train_csv, "--dropout", "0", "--checkpoint-every", 3, *TINY]
    slimtext(*common, "--out", tmp_path / "ref", "--batch-size", 4, "--strategy", "fsdp", nproc=2)
    ckpts = sorted((tmp_path / "ref.checkpoints").glob("step-*"))
    assert (ckpts[0] / "dcp").is_dir() and not (ckpts[0] / "model.safetensors").exists()
    # 2 ranks -> 1 process (global batch 8 either way)
    mid = tmp_path / "one.checkpoints"
    mid.mkdir()
    shutil.copytree(ckpts[0], mid / ckpts[0].name)
    shutil.copy(tmp_path / "ref.checkpoints" / "tokenizer.json", mid / "tokenizer.json")
    r = slimtext(*common, "--out", tmp_path / "one", "--batch-size", 8, "--resume")
    assert max_diff(weights(tmp_path / "ref"), weights(tmp_path / "one")) < 1e-5
    # by design in one process: torch's "assuming the intent is to load in a single process"
    # warning reached the terminal
    assert "warning" not in r.stderr.lower(), r.stderr
    # 1 rank (fsdp, torchrun) -> 2 ranks
    slimtext(*common, "--out", tmp_path / "r1", "--batch-size", 8, "--strategy", "fsdp", nproc=1)
    first = sorted((tmp_path / "r1.checkpoints").glob("step-*"))[0]
    back = tmp_path / "two.checkpoints"
    back.mkdir()
    shutil.copytree(first, back / first.name)
    shutil.copy(tmp_path / "r1.checkpoints" / "tokenizer.json", back / "tokenizer.json")
    slimtext(*common, "--out", tmp_path / "two", "--batch-size", 4, "--strategy", "fsdp",
             "--resume", nproc=2)  # fmt: skip
    assert max_diff(weights(tmp_path / "r1"), weights(tmp_path / "two")) < 1e-5


def _long_run_with_a_checkpoint(train_csv, out):
    """A 2-rank run (launcher in a session of its own) long enough to be killed mid-run, once it
    has written a checkpoint: the launcher and its two ranks' pids."""
    args = ["train", "--data", train_csv, "--batch-size", 4, "--checkpoint-every", 2, *TINY]
    args[args.index("--epochs") + 1] = "200"
    proc = slimtext(*args, "--out", out, nproc=2, background=True)
    ckpts = out.parent / f"{out.name}.checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and not (ckpts.is_dir() and any(ckpts.glob("step-*"))):
        if proc.poll() is not None:
            raise AssertionError("the run ended before it could be killed")
        time.sleep(0.05)
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    pids = [int(p) for p in ranks.stdout.split()]
    if len(pids) != 2:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"expected 2 ranks, found {ranks.stdout!r}")
    return proc, pids


def test_a_dead_rank_stops_the_run_instead_of_hanging(tmp_path, train_csv):
    """SIGKILL one rank mid-run: torchrun must take the other down and exit non-zero, well
    before the collective timeout, and no model directory may appear."""
    out = tmp_path / "dead"
    proc, pids = _long_run_with_a_checkpoint(train_csv, out)
    try:
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.time()
        code = proc.wait(timeout=100)  # SLIMTEXT_DIST_TIMEOUT is 120 s in these tests
        assert code != 0 and time.time() - t0 < 100
        assert not (out / "model.safetensors").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_tokenizer_error_stops_every_rank_cleanly(tmp_path, train_csv):
    # Rank 0 made the tokenizer while the others waited for it: they got a closed gloo socket
    # and its traceback instead of the reason. A missing file is now refused by every rank
    # before the process group forms (and before the data is read), each naming it.
    cmd = [*TORCHRUN, "--nproc-per-node=2", "-m", "slimtext", "train", "--data", str(train_csv),
           "--out", str(tmp_path / "m"), "--tokenizer", str(tmp_path / "nope.json"),
           *TINY]  # fmt: skip
    r = run_torchrun(cmd, timeout=120)
    ranks_own = r.stderr.split("failed (exitcode")[0]  # before torchrun's own report
    assert r.returncode != 0
    assert ranks_own.count("nope.json: tokenizer file not found") == 2, r.stderr
    assert "Connection closed" not in r.stderr and "Traceback" not in ranks_own, r.stderr


def test_a_user_error_under_nproc_is_a_line_not_a_launcher_traceback(tmp_path, train_csv):
    cmd = [sys.executable, "-m", "slimtext", "train", "--data", str(train_csv), "--out",
           str(tmp_path / "m"), *TINY, "--model", "attention", "--strategy", "tp",
           "--nproc", "2"]  # fmt: skip
    r = run_torchrun(cmd, timeout=120)
    assert r.returncode == 2, r.stderr
    # every rank hits it; only rank 0 speaks (it was printed once per rank)
    assert r.stderr.count("--strategy tp needs the transformer model") == 1, r.stderr
    assert "stopped (exit code 2)" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # nor torchrun's OMP_NUM_THREADS banner, nor its agent's log lines about the stop
    assert "OMP_NUM_THREADS" not in r.stderr and "exitcode" not in r.stderr, r.stderr


def _on_rank_1(tmp_path, code: str) -> dict:
    """ENV with a sitecustomize that runs `code` (with `os` imported) in rank 1 alone."""
    hook = tmp_path / "hook"
    hook.mkdir()
    body = "".join(f"    {line}\n" for line in code.splitlines())
    (hook / "sitecustomize.py").write_text(
        f"import os\nif os.environ.get('LOCAL_RANK') == '1':\n{body}"
    )
    path = os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**ENV, "PYTHONPATH": path}


def test_nproc_shows_the_failed_rank_and_leaves_no_logs_behind(tmp_path, train_csv):
    # Ranks >= 1 write to files under --nproc: a failure of theirs must still be shown, once.
    env = _on_rank_1(tmp_path, "import sys\nprint('rank one says no', file=sys.stderr, "
                               "flush=True)\nos._exit(3)")  # fmt: skip
    tmp = tmp_path / "tmp"  # torchrun alone leaves a torchelastic_* folder here per run
    tmp.mkdir()
    cmd = [sys.executable, "-m", "slimtext", "train", "--data", str(train_csv), *TINY,
           "--max-steps", "2", "--nproc", "2"]  # fmt: skip
    env["TMPDIR"] = str(tmp)
    r = subprocess.run([*cmd, "--out", str(tmp_path / "m")], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("rank one says no") == 1, r.stderr
    assert "error: rank 1 of 2 stopped (exit code 3)" in r.stderr, r.stderr
    assert not [*tmp.glob("torchelastic_*"), *tmp.glob("slimtext-ranks-*")]
    # a run that succeeds: each rank had its share of the cores (torchrun's default is 1)
    del env["PYTHONPATH"]
    r = subprocess.run([*cmd, "--out", str(tmp_path / "ok")], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    from slimtext.cli import _rank_threads

    assert metrics["training"]["threads"] == _rank_threads(2)
    assert not [*tmp.glob("torchelastic_*"), *tmp.glob("slimtext-ranks-*")]


def test_each_rank_gets_its_share_of_the_cores():
    from slimtext.cli import _rank_threads

    assert _rank_threads(2, cores=16) == 8
    assert _rank_threads(3, cores=16) == 5
    assert _rank_threads(4, cores=2) == 1
    assert _rank_threads(1) >= 1


def test_killing_the_launcher_stops_its_ranks(tmp_path, train_csv):
    """torchrun puts ranks in sessions of their own: SIGKILL of the command left them training
    as orphans (and writing checkpoints next to a later --resume). They must stop with it."""
    out = tmp_path / "orphan"
    proc, pids = _long_run_with_a_checkpoint(train_csv, out)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the launcher only, as a kill of a job's main pid
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.1)
        alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
        assert not alive, f"ranks {alive} outlived the launcher"
        assert not (out / "model.safetensors").exists()
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def test_checkpoint_with_a_missing_shard_is_skipped_with_a_warning(tmp_path, train_csv):
    """A DCP checkpoint that lost one rank's shard fails its manifest: resume says so, falls
    back to the previous checkpoint, and still ends with the uninterrupted run's weights."""
    common = ["train", "--data", train_csv, "--dropout", "0", "--checkpoint-every", 2, *TINY,
              "--batch-size", 4, "--strategy", "fsdp"]  # fmt: skip
    slimtext(*common, "--out", tmp_path / "ref", nproc=2)
    ckpts = sorted((tmp_path / "ref.checkpoints").glob("step-*"))
    assert len(ckpts) >= 2
    work = tmp_path / "broken.checkpoints"
    work.mkdir()
    for c in ckpts[:2]:
        shutil.copytree(c, work / c.name)
    shutil.copy(tmp_path / "ref.checkpoints" / "tokenizer.json", work / "tokenizer.json")
    shards = sorted((work / ckpts[1].name / "dcp").glob("*.distcp"))
    assert len(shards) == 2
    shards[1].unlink()  # rank 1's shard of the newest checkpoint is gone
    r = slimtext(*common, "--out", tmp_path / "broken", "--resume", nproc=2)
    assert "skipping damaged checkpoint" in r.stderr and ckpts[1].name in r.stderr
    assert max_diff(weights(tmp_path / "ref"), weights(tmp_path / "broken")) < 1e-5


def _mismatch_worker(rank, store_path):
    import torch.distributed as dist

    from slimtext.train.distributed import DistContext, DistributedError, check_same_config

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        config = {"lr": 0.1 * (rank + 1), "n": 5, "train": {"seed": 3 + rank, "x": 1}}
        check_same_config(DistContext(rank=rank, world_size=2), config)
    except DistributedError as e:
        # the field inside a group is named (it said "train" for a different --seed)
        assert "rank 1" in str(e) and "lr" in str(e) and "train.seed 3 vs 4" in str(e), str(e)
        return
    finally:
        dist.destroy_process_group()
    raise AssertionError("no error for different configs")


def test_ranks_with_different_configs_get_a_clear_error(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_mismatch_worker, args=(str(tmp_path / "store"),), nprocs=2,
                       start_method="spawn", join=True)  # fmt: skip


def test_ddp_strategy_without_torchrun_says_how_to_launch(tmp_path, train_csv):
    from typer.testing import CliRunner

    from slimtext.cli import app

    r = CliRunner().invoke(app, ["train", "--data", str(train_csv), "--out", str(tmp_path / "m"),
                                 "--strategy", "ddp"])  # fmt: skip
    assert r.exit_code == 2 and "torchrun" in r.output
    # refused before launching torchrun: one line, not one per rank and a launcher traceback
    for bad, message in (
        (["--nproc", "-1"], "--nproc must be >= 1"),
        (["--nproc", "2", "--strategy", "single"], "--strategy single with --nproc 2"),
        # was each rank's error, sometimes printed twice and blamed on rank 1
        (["--nproc", "2", "--strategy", "bogus"], "--strategy must be one of"),
    ):
        r = CliRunner().invoke(app, ["train", "--data", str(train_csv), "--out",
                                     str(tmp_path / "m"), *bad])  # fmt: skip
        assert r.exit_code == 2 and message in r.output, r.output


def test_the_failure_reported_is_the_cause_not_rank_0s_closed_connection():
    from types import SimpleNamespace as F

    from slimtext.cli import _culprit

    # rank 1 raised; rank 0 then died of the closed connection in the same (whole) second
    assert _culprit({0: F(exitcode=1, timestamp=100), 1: F(exitcode=1, timestamp=100)})[0] == 1
    assert _culprit({0: F(exitcode=1, timestamp=99), 1: F(exitcode=1, timestamp=100)})[0] == 0
    # a usage error every rank hits: rank 0's, already on the terminal (no second copy)
    assert _culprit({0: F(exitcode=2, timestamp=100), 1: F(exitcode=2, timestamp=99)})[0] == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_nproc_launcher_is_one_line_and_names_the_checkpoint(
    tmp_path, train_csv, sig
):
    # Ctrl-C / SIGTERM of `--nproc` printed torch's SignalException traceback and exited 1.
    # Then: SIGTERM (a scheduler's stop) killed the ranks silently, so nothing said which
    # checkpoint --resume continues from, and torch's agent logged "Received 15 death signal".
    args = ["train", "--data", str(train_csv), "--batch-size", "4", "--checkpoint-every", "2",
            *TINY, "--out", str(tmp_path / "m")]  # fmt: skip
    args[args.index("--epochs") + 1] = "200"
    proc = subprocess.Popen([sys.executable, "-m", "slimtext", *args, "--nproc", "2"], env=ENV,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    ckpts, deadline = tmp_path / "m.checkpoints", time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list(ckpts.glob("step-*")):
        time.sleep(0.05)
    try:
        proc.send_signal(sig)
        err = proc.communicate(timeout=60)[1]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig and f"stopped by signal {int(sig)}" in err, err
    assert "Traceback" not in err and "death signal" not in err, err
    assert err.count(f"note: checkpoints kept in {ckpts} (newest step-") == 1, err


def test_an_error_on_rank_1_alone_is_shown_and_rank_0_says_why_it_stopped(tmp_path, train_csv):
    # rank 0 died of the closed connection with gloo's traceback, and was reported as the cause
    env = _on_rank_1(tmp_path, "import slimtext.api as api\ndef boom(ctx, config):\n"
                               "    raise RuntimeError('injected failure on rank 1')\n"
                               "api.check_same_config = boom")  # fmt: skip
    cmd = [sys.executable, "-m", "slimtext", "train", "--data", str(train_csv), *TINY,
           "--max-steps", "2", "--nproc", "2", "--out", str(tmp_path / "m")]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    # (rank 1 may still be in its exit when the agent, seeing rank 0 stop, sends it SIGTERM:
    # then the run ends with 143, not 1; either way rank 1 is the one reported)
    assert r.returncode in (1, 143), r.stderr
    assert "injected failure on rank 1" in r.stderr, r.stderr
    assert "error: rank 1 of 2 stopped" in r.stderr, r.stderr
    # rank 0, when it lived long enough to see the closed connection, says so in one line
    assert "Connection closed by peer" not in r.stderr, r.stderr


def test_a_checkpoint_not_written_by_tp_is_named_so_when_a_tp_run_resumes_it(tmp_path):
    # It was read as "written with --strategy tp --tp-size 1", for an fsdp or pp checkpoint.
    from types import SimpleNamespace

    import torch.distributed as dist

    from slimtext.train.checkpoint import load_checkpoint, save_checkpoint
    from slimtext.train.distributed import DistContext, DistributedError

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    ck = save_checkpoint(tmp_path / "ck", 1, model=model, optimizer=opt, state={"step": 1})
    model._slimtext_layout = SimpleNamespace(tp_size=2)  # as a tp-wrapped model carries
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        with pytest.raises(DistributedError, match="was not written by --strategy tp"):
            load_checkpoint(ck, model=model, optimizer=opt, ctx=DistContext(strategy="tp"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("strategy", "version", "refused"),
                         [("fsdp", "2.5.1", True), ("tp", "2.4.0", True), ("ddp", "2.4.0", False),
                          ("fsdp", "2.6.0", False), ("pp", "2.12.0", True)])  # fmt: skip
def test_strategies_name_the_torch_they_need(monkeypatch, strategy, version, refused):
    from slimtext.train.distributed import DistributedError, check_torch_for

    monkeypatch.setattr(torch, "__version__", version)
    if refused:
        with pytest.raises(DistributedError, match=rf"--strategy {strategy} needs torch >= "):
            check_torch_for(strategy)
    else:
        check_torch_for(strategy)
