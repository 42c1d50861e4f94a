import csv
import json
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from other_run import another_run
from safetensors.torch import load_file
from typer.testing import CliRunner

import slimtext
from slimtext.cli import app

runner = CliRunner()
SMALL = ["--model", "attention", "--vocab-size", "400", "--max-length", "32",
         "--batch-size", "8", "--no-progress"]  # fmt: skip


def write_csv(path, texts, labels):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))
    return path


@pytest.fixture(scope="module")
def data_files(tmp_path_factory, toy_data):
    d = tmp_path_factory.mktemp("cli-data")
    texts, labels = toy_data
    return write_csv(d / "train.csv", texts[:75], labels[:75]), write_csv(
        d / "test.csv", texts[75:], labels[75:]
    )


@pytest.mark.parametrize(
    "verb", ["train", "eval", "predict", "demo", "serve", "compress", "export", "pretrain"]
)
def test_every_verb_has_help(verb):
    r = runner.invoke(app, [verb, "--help"])
    assert r.exit_code == 0 and "--config" in r.output


def test_serve_help_says_what_each_request_limit_refuses():
    r = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    lines = [line for line in r.output.splitlines() if "--max-text" in line or "--max-body" in line]
    assert len(lines) == 3 and all("413" in line for line in lines), lines


@pytest.mark.parametrize(
    "option", ["--max-batch-size", "--max-queue", "--max-texts-per-request", "--max-text-chars",
               "--max-body-bytes", "--max-wait-ms"],
)  # fmt: skip
def test_a_serve_limit_out_of_range_names_its_option(tmp_path, option):
    # the server's own check named the Python parameter (max_queue), not the option typed
    r = runner.invoke(app, ["serve", str(tmp_path / "no-model"), option, "-1"])
    assert r.exit_code == 2 and f"'{option}'" in r.output and "Traceback" not in r.output, r.output


def test_an_impossible_port_is_a_usage_error_before_the_model_loads(tmp_path):
    r = runner.invoke(app, ["serve", str(tmp_path / "no-model"), "--port", "99999"])
    assert r.exit_code == 2 and "65535" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["serve", str(tmp_path / "no-model"), "--log-level", "WARN"])
    assert r.exit_code == 2 and "'warning'" in r.output and "Traceback" not in r.output


def test_train_eval_predict_through_the_cli(tmp_path, data_files):
    train, test = data_files
    out = tmp_path / "m"
    r = runner.invoke(app, ["train", "--data", str(train), "--test", str(test), "--out", str(out),
                            "--epochs", "4", *SMALL])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and (out / "model.safetensors").is_file()
    assert "test" in json.loads((out / "metrics.json").read_text())
    assert (out / "training_curve.png").is_file() and (out / "metrics.jsonl").is_file()

    r = runner.invoke(app, ["eval", str(out), "--data", str(test), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["n"] == 15 and 0 <= rep["accuracy"] <= 1 and "macro_f1" in rep

    r = runner.invoke(app, ["predict", str(out), "goal match team", "bank profit"])
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 2 and set(lines[0]["probs"]) == {"money", "sport", "tech"}
    assert abs(sum(lines[0]["probs"].values()) - 1) < 1e-4

    f = tmp_path / "in.txt"
    f.write_text("goal\n\nbank profit shares\n")
    r = runner.invoke(app, ["predict", str(out), "--file", str(f)])
    assert len(r.stdout.splitlines()) == 3  # one line out per line in, blank ones included
    r = runner.invoke(app, ["predict", str(out)], input="chip code\nteam\n")
    assert [json.loads(x)["label"] for x in r.stdout.splitlines()] == [
        json.loads(x)["label"]
        for x in runner.invoke(app, ["predict", str(out), "chip code", "team"]).stdout.splitlines()
    ]


def test_predict_reads_lines_as_the_loaders_do_and_keeps_output_aligned(tmp_path, data_files):
    train, test = data_files
    out = tmp_path / "m"
    # --test is read (and a broken one refused) before any training happens
    r = runner.invoke(app, ["train", "--data", str(train), "--test", str(tmp_path / "nope.csv"),
                            "--out", str(out), "--max-steps", "2", *SMALL])  # fmt: skip
    assert r.exit_code != 0 and "nope.csv" in r.output and "trained" not in r.output
    # ... and so is one with a label the training data lacks, or no labels at all (as --valid)
    odd = write_csv(tmp_path / "odd.csv", ["rain all day"], ["weather"])
    plain = tmp_path / "plain.txt"
    plain.write_text("just text\nmore text\n")
    for flag, f, why in (("--test", odd, "'weather'.*never appears"),
                         ("--test", plain, "--test data has no labels"),
                         ("--valid", plain, "validation data has no labels")):  # fmt: skip
        r = runner.invoke(app, ["train", "--data", str(train), flag, str(f), "--out", str(out),
                                "--max-steps", "2", *SMALL])  # fmt: skip
        assert r.exit_code != 0 and re.search(why, r.output), r.output
        assert "trained" not in r.output and not out.exists()
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--max-steps", "2",
                            *SMALL])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", str(out), "--data", str(odd)])
    assert r.exit_code != 0 and "never appears in the labels this model was trained on" in r.output

    def labels_and_probs(args, **kw):
        r = runner.invoke(app, ["predict", str(out), *args], **kw)
        assert r.exit_code == 0, r.output
        return [json.loads(x) for x in r.stdout.splitlines()]

    ref = labels_and_probs(["goal match team", "bank profit"])
    # A BOM, CRLF endings and a blank line: same texts as the arguments, one output per line
    f = tmp_path / "in.txt"
    f.write_bytes("\ufeffgoal match team\r\n  \r\nbank profit\r\n".encode())
    got = labels_and_probs(["--file", str(f)])
    assert len(got) == 3 and got[1]["label"] is None and "line 2" in got[1]["error"]
    assert [got[0], got[2]] == ref
    assert labels_and_probs([], input="goal match team\r\nbank profit\n") == ref

    f.write_bytes(b"goal\ncaf\xe9 bank\n")
    r = runner.invoke(app, ["predict", str(out), "--file", str(f)])
    assert r.exit_code == 2 and "in.txt:2: not valid UTF-8" in r.output
    # the lines before the bad one are still answered, so the output stops where the error says
    assert [json.loads(x)["label"] for x in r.stdout.splitlines()] == [
        labels_and_probs(["goal"])[0]["label"]
    ]
    # an argument that was not UTF-8 (argv keeps such bytes as lone surrogates) is named by
    # its number, not by its place among the non-blank ones; the ones before it are answered
    r = runner.invoke(app, ["predict", str(out), "", "goal", "bank", "bad\udcff"])
    assert r.exit_code == 2 and "argument 4 is not valid UTF-8" in r.output, r.output
    assert [json.loads(x)["label"] for x in r.stdout.splitlines()][1:] == [
        x["label"] for x in labels_and_probs(["goal", "bank"])
    ]
    r = runner.invoke(app, ["predict", str(out), "goal", "--file", str(f)])
    assert r.exit_code == 2 and "not both" in r.output

    # --encoding: a cp1252 file (Excel) and UTF-16 with its BOM, file and stdin alike
    cafe = labels_and_probs(["goal", "caf\u00e9 bank"])
    f.write_bytes("goal\r\ncaf\u00e9 bank\r\n".encode("cp1252"))
    r = runner.invoke(app, ["predict", str(out), "--file", str(f)])
    assert r.exit_code == 2 and "pass --encoding" in r.output
    assert labels_and_probs(["--file", str(f), "--encoding", "cp1252"]) == cafe
    f.write_bytes("goal\r\ncaf\u00e9 bank\n".encode("utf-16"))
    assert labels_and_probs(["--file", str(f), "--encoding", "utf-16"]) == cafe
    utf16 = f.read_bytes()
    assert labels_and_probs(["--encoding", "utf-16"], input=utf16) == cafe
    # its byte-order mark says UTF-16 (Notepad's "Unicode"), so no --encoding is needed
    assert labels_and_probs(["--file", str(f)]) == cafe
    assert labels_and_probs([], input="x\n".encode("utf-32")) == labels_and_probs(["x"])
    f.write_bytes(utf16 + b"\x00\xd8")  # line 3: a lone surrogate
    r = runner.invoke(app, ["predict", str(out), "--file", str(f), "--encoding", "utf-16"])
    assert r.exit_code == 2 and "in.txt:3: not valid utf-16" in r.output
    assert [json.loads(x) for x in r.stdout.splitlines()] == cafe  # the lines before: answered
    assert "pass --encoding" not in r.output  # it was passed
    r = runner.invoke(app, ["predict", str(out), "--file", str(f), "--encoding", "klingon"])
    assert r.exit_code == 2 and "unknown encoding" in r.output


def test_eval_and_predict_take_threads_as_train_does(tiny_model_dir, data_files, monkeypatch):
    _, test = data_files
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)  # process-wide: not really set
    r = runner.invoke(app, ["eval", str(tiny_model_dir), "--data", str(test), "--threads", "1"])
    p = runner.invoke(app, ["predict", str(tiny_model_dir), "goal", "--threads", "3"])
    assert r.exit_code == 0 and p.exit_code == 0, r.output + p.output
    assert seen == [1, 3]
    r = runner.invoke(app, ["predict", str(tiny_model_dir), "goal", "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output


def test_eval_and_predict_run_on_the_device_asked_for(tiny_model_dir, data_files):
    _, test = data_files
    cpu = runner.invoke(app, ["eval", str(tiny_model_dir), "--data", str(test), "--json"])
    assert cpu.exit_code == 0, cpu.output
    ask = ["--device", "cuda"]
    r = runner.invoke(app, ["eval", str(tiny_model_dir), "--data", str(test), "--json", *ask])
    p = runner.invoke(app, ["predict", str(tiny_model_dir), "goal match", *ask])
    if not torch.cuda.is_available():
        for res in (r, p):
            assert res.exit_code == 2 and "no CUDA device" in res.output, res.output
        return
    assert r.exit_code == 0 and p.exit_code == 0, r.output + p.output
    on_gpu, on_cpu = json.loads(r.stdout), json.loads(cpu.stdout)
    assert on_gpu["n"] == on_cpu["n"] and on_gpu["accuracy"] == on_cpu["accuracy"]
    assert abs(on_gpu["loss"] - on_cpu["loss"]) < 1e-4


def test_eval_reads_other_encodings_and_reports_skipped_rows(tmp_path, data_files):
    train, test = data_files
    out = tmp_path / "m"
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--max-steps", "2",
                            *SMALL])  # fmt: skip
    assert r.exit_code == 0, r.output
    with open(test, newline="") as fh:
        rows = list(csv.reader(fh))
    rows[1][0] = "café goal"  # not ASCII: differs between cp1252 and UTF-8
    rows.append(["", "sport"])  # an empty text, skipped with --on-bad skip
    f = tmp_path / "t1252.csv"
    with open(f, "w", newline="", encoding="cp1252") as fh:
        csv.writer(fh).writerows(rows)
    r = runner.invoke(app, ["eval", str(out), "--data", str(f), "--json"])
    assert r.exit_code == 2 and "--encoding" in r.output
    r = runner.invoke(app, ["eval", str(out), "--data", str(f), "--json", "--encoding", "cp1252",
                            "--on-bad", "skip"])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["n"] == len(rows) - 2  # header and the empty text
    assert "skipped 1" in r.stderr and got["skipped"] == {"empty text": 1}  # for scripts too


def test_ngram_bag_model_trains_saves_and_reloads_through_the_cli(tmp_path, data_files):
    from slimtext.artifact import read_model_dir

    train, test = data_files
    out = tmp_path / "ng"
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--epochs", "2",
                            "--ngram-buckets", "64", "--embeddings", "bag", *SMALL])  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())["model"]
    assert cfg["ngram_buckets"] == 64 and cfg["embeddings"] == "bag"
    weights = load_file(out / "model.safetensors")
    assert weights["embeddings.ngram.weight"].shape == (64, cfg["hidden_size"])
    assert not any(k.startswith(("embeddings.pos", "embeddings.norm")) for k in weights)
    md = read_model_dir(out)
    torch.testing.assert_close(md.model.embeddings.ngram.weight, weights["embeddings.ngram.weight"])
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "bad"),
                            "--model", "transformer", "--ngram-buckets", "64"])  # fmt: skip
    assert r.exit_code != 0 and "attention" in r.output


def test_yaml_config_fills_options_and_flags_override_it(tmp_path, data_files):
    train, _ = data_files
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nmax-steps: 3\nlr: 0.01\nvocab_size: 100\n")
    out = tmp_path / "m"
    r = runner.invoke(app, ["train", "--config", str(cfg), "--data", str(train), "--out", str(out),
                            "--max-steps", "2", *SMALL])  # fmt: skip
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["lr"] == 0.01 and saved["max_steps"] == 2  # file value, then flag override

    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--max-steps", "1",
                            "--long-text", "chunks", *SMALL])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["long_text"] == "chunks"
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--long-text", "mid"])
    assert r.exit_code != 0 and "long_text" in r.output

    cfg.write_text("text_col: text\nmax_steps: 1\n")  # a repeatable option given one value
    r = runner.invoke(app, ["train", "--config", str(cfg), "--data", str(train), "--out", str(out),
                            *SMALL])  # fmt: skip
    assert r.exit_code == 0, r.output

    cfg.write_text("epochz: 1\n")
    r = runner.invoke(app, ["train", "--config", str(cfg), "--data", str(train), "--out", str(out)])
    assert r.exit_code != 0 and "epochz" in r.output

    # keys are the options as typed: `json` for --json (whose parameter is json_out)
    cfg.write_text("json: true\n")
    r = runner.invoke(app, ["eval", str(out), "--config", str(cfg), "--data", str(train)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] > 0


def test_yaml_config_errors_name_the_file_and_key(tmp_path, tiny_model_dir, data_files):
    _, test = data_files
    cfg = tmp_path / "c.yaml"

    def run(*extra):
        args = ["eval", str(tiny_model_dir), "--data", str(test), "--config", str(cfg), *extra]
        return runner.invoke(app, args)

    cfg.write_text("json: true\n", encoding="utf-16")  # Notepad's "Unicode": read by its BOM
    r = run()
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 15, r.output
    cfg.write_bytes(b"label_col: caf\xe9\n")  # cp1252, not UTF-8
    r = run()
    out = " ".join(r.output.replace("│", " ").split())  # rich boxes (and wraps) its lines
    assert r.exit_code == 2 and "cannot read YAML" in out and "Traceback" not in r.output
    for body, why in (("json: true\nconfig: other.yaml\n", "unknown keys 'config'"),
                      # a typo's meaning is suggested; the valid list has the no- forms
                      ("batch-sise: 4\n", "'batch-sise' (did you mean 'batch-size'?)"),
                      ("jsn: 1\n", "'jsn' (did you mean 'json'?); valid: backend,"),
                      ("jsn: 1\n", " no-json, no-progress,"),
                      ("batch_size: abc\n", "key 'batch_size'"),
                      ("batch_size: true\n", "key 'batch_size': True is a yes/no value"),
                      ("data: [a, b]\n", "key 'data' takes one value"),
                      ("batch-size: 5\nbatch_size: 7\n", "are one option")):  # fmt: skip
        cfg.write_text(body)
        r = run()
        out = " ".join(r.output.replace("│", " ").split())  # rich boxes its lines
        assert r.exit_code == 2 and why in out and "c.yaml" in out, (body, r.output)
        assert "Traceback" not in r.output
    cfg.write_text("batch_size: 4\njson: true\n")
    r = run("--batch-size", "8")
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 15, r.output


def _refused_yaml(tmp_path, train, body: str) -> str:
    """`train --config` of YAML `body`: refused (exit 2, no traceback, no model); its message."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(body)
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "m"),
                            "--config", str(cfg)])  # fmt: skip
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert not (tmp_path / "m").exists()
    return " ".join(r.output.replace("│", " ").split())  # rich boxes (and wraps) its lines


def test_a_yaml_of_a_saved_config_says_which_keys_no_flag_sets(tmp_path, data_files):
    # config.json's train part as a YAML: keep_checkpoints was offered as "did you mean
    # 'gradient-checkpointing'?", bucket_batches as 'microbatches'
    out = _refused_yaml(
        tmp_path,
        data_files[0],
        "epochs: 1\nkeep_checkpoints: 2\nbucket_batches: 50\nbatch-sise: 4\n",
    )
    said = "'bucket_batches', 'keep_checkpoints': config.json records them, but no option"
    assert said in out
    assert "'batch-sise' (did you mean 'batch-size'?)" in out  # a typo is still a typo
    assert "gradient-checkpointing'?" not in out and not (tmp_path / "m").exists()


def test_a_yaml_of_a_saved_config_names_the_option_that_sets_arch(tmp_path, data_files):
    # config.json's model part says `arch: attention`; the option is --model: it was said to
    # be a key "no option of this command sets"
    out = _refused_yaml(tmp_path, data_files[0], "epochs: 1\narch: attention\nkeep_best: true\n")
    assert "'arch' (config.json's name for --model: write 'model: attention')" in out
    assert "'keep_best': config.json records them, but no option" in out
    assert "'arch', " not in out and not (tmp_path / "m").exists()


def test_yaml_no_keys_are_the_no_flags_as_typed(tmp_path, tiny_model_dir, data_files):
    # `no-json: true` (the option `--no-json`, as typed) was refused as an unknown key
    _, test = data_files
    cfg = tmp_path / "c.yaml"

    def run(body, *extra):
        cfg.write_text(body)
        args = ["eval", str(tiny_model_dir), "--data", str(test), "--config", str(cfg), *extra]
        return runner.invoke(app, args)

    r = run("no-json: true\nno_progress: true\n")
    assert r.exit_code == 0 and "macro-F1" in r.stdout and not r.stdout.startswith("{"), r.output
    r = run("no-json: false\n")  # the opposite of --no-json: --json
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 15, r.output
    r = run("no-json: true\n", "--json")  # a flag still wins over the file
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 15, r.output
    for body, why in (("json: true\nno-json: true\n", "keys 'json' and 'no-json' are one option"),
                      ("no-json: maybe\n", "c.yaml: key 'no-json'"),
                      # only yes/no flags have a no- form
                      ("no-label-col: x\n", "unknown keys 'no-label-col'")):  # fmt: skip
        r = run(body)
        out = " ".join(r.output.replace("│", " ").split())  # rich boxes (and wraps) its lines
        assert r.exit_code == 2 and why in out, (body, r.output)


def test_a_yaml_file_that_is_not_a_mapping_or_a_null_list_value(tmp_path, tiny_model_dir,
                                                                 data_files):  # fmt: skip
    _, test = data_files
    cfg = tmp_path / "c.yaml"

    def run(body):
        cfg.write_text(body)
        args = ["eval", str(tiny_model_dir), "--data", str(test), "--config", str(cfg)]
        return runner.invoke(app, args)

    for body in ("false\n", "0\n", "''\n"):  # were read as an empty file, without a word
        r = run(body)
        out = " ".join(r.output.replace("│", " ").split())
        assert r.exit_code == 2 and "c.yaml: expected a mapping" in out, (body, r.output)
    r = run("# nothing set yet\n")  # an empty file (comments only) sets nothing
    assert r.exit_code == 0, r.output
    # null is the option's default, for a repeatable option as for the others ("None is not
    # a valid string" before)
    r = run("text_col: null\nlabel_col:\njson: true\n")
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 15, r.output


def test_strategy_in_any_case_and_a_number_as_out_from_yaml(tmp_path, data_files, monkeypatch):
    # --strategy SINGLE was refused by the training options ("got 'SINGLE'") where every other
    # fixed choice (--precision BF16, --model Attention) is read in any case; and `out: 2024`
    # in a YAML file failed as "expected str, bytes or os.PathLike object, not int".
    train, _ = data_files
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("out: 2024\nstrategy: Single\nmax_steps: 1\n")
    r = runner.invoke(app, ["train", "--config", str(cfg), "--data", str(train), *SMALL])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "2024" / "config.json").read_text())["train"]["strategy"] == (
        "single"
    )
    r = runner.invoke(app, ["pretrain", "--data", str(train), "--out", str(tmp_path / "p"),
                            "--strategy", "SINGLE", "--max-steps", "1", "--vocab-size", "400",
                            "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
                            "--ffn-size", "64", "--max-length", "32", "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output


def test_a_bad_value_from_a_yaml_file_names_the_file_and_key_when_checked_late(
    tmp_path, data_files
):
    # Checked by the training options, not the option parser: "precision must be one of ..."
    # named neither the file nor the key that set it.
    train, _ = data_files
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("precision: fp64\ngrad-accum: 0\n")
    b.write_text("grad_accum: -1\n")

    def run(*extra):
        return runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "m"),
                                   "--no-progress", *extra])  # fmt: skip

    r = run("--config", str(a))
    assert r.exit_code == 2 and f"fp64' ({a}, key 'precision')" in r.output, r.output
    r = run("--config", str(a), "--precision", "fp32")
    assert r.exit_code == 2 and f"got 0 ({a}, key 'grad-accum')" in r.output, r.output
    r = run("--config", str(a), "--config", str(b), "--precision", "fp32")  # the later file's
    assert r.exit_code == 2 and f"got -1 ({b}, key 'grad_accum')" in r.output, r.output
    r = run("--config", str(a), "--precision", "fp64")  # the flag's own value: no file to name
    assert r.exit_code == 2 and "got 'fp64'" in r.output and "yaml" not in r.output, r.output
    assert not (tmp_path / "m").exists()


def test_a_typed_epochs_beside_max_steps_is_said_to_be_ignored(tmp_path, data_files):
    # With max-steps in a config file, --epochs 1 trained the file's steps without a word.
    train, _ = data_files
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max-steps: 2\nmodel: attention\nvocab-size: 300\nmax-length: 16\n")
    base = ["train", "--data", str(train), "--no-progress", "--config", str(cfg)]
    r = runner.invoke(app, [*base, "--epochs", "1", "--out", str(tmp_path / "a")])
    note = f"--epochs 1 is ignored: --max-steps 2 sets the run's length ({cfg}, key 'max-steps';"
    assert r.exit_code == 0 and note in r.output, r.output
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "b")])  # --epochs not typed: quiet
    assert r.exit_code == 0 and "is ignored" not in r.output, r.output
    # a --max-steps that is refused sets no length: the note said it did, then the error
    r = runner.invoke(
        app, [*base, "--epochs", "1", "--max-steps", "0", "--out", str(tmp_path / "c")]
    )
    assert r.exit_code == 2 and "max_steps must be >= 1" in r.output, r.output
    assert "is ignored" not in r.output, r.output


def test_several_yaml_configs_are_layers_later_files_win(tmp_path, data_files):
    train, _ = data_files
    base, run = tmp_path / "base.yaml", tmp_path / "run.yaml"
    base.write_text("max_steps: 3\nlr: 0.01\nseed: 5\n")
    run.write_text("lr: 0.02\n")
    out = tmp_path / "m"
    r = runner.invoke(app, ["train", "--config", str(base), "--config", str(run), "--data",
                            str(train), "--out", str(out), "--seed", "6", *SMALL])  # fmt: skip
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())["train"]
    # base's max_steps, run's lr over base's, the flag's seed over both
    assert (saved["max_steps"], saved["lr"], saved["seed"]) == (3, 0.02, 6)
    run.write_text("lr: fast\n")  # a bad value in the second file names that file
    r = runner.invoke(app, ["train", "--config", str(base), "--config", str(run), "--data",
                            str(train), "--out", str(out), *SMALL])  # fmt: skip
    assert r.exit_code == 2 and "run.yaml" in r.output and "lr" in r.output


def test_an_unfinished_runs_checkpoints_are_never_left_behind_a_new_model(tmp_path, data_files):
    train, _ = data_files
    out = tmp_path / "m"
    steps = ["--max-steps", "2", *SMALL]
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--resume", *steps])
    assert r.exit_code == 0 and "no checkpoints in" in r.output and "starting fresh" in r.output
    # an earlier run killed after a checkpoint: a run without checkpoints is refused too
    unfinished = tmp_path / "m.checkpoints" / "step-000000004"
    unfinished.mkdir(parents=True)
    (tmp_path / "m.checkpoints" / "FINISHED").unlink()  # the first run's mark
    shutil.rmtree(out)
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), *steps])
    assert r.exit_code == 2 and "checkpoints of an earlier run" in r.output, r.output
    assert not out.exists() and unfinished.is_dir()
    (tmp_path / "m.checkpoints" / "FINISHED").write_text(str(out))  # that run wrote its model
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), *steps])
    assert r.exit_code == 0, r.output


def test_bad_input_is_one_clear_error_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,a\n,b\n")
    r = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "m"), *SMALL])
    assert r.exit_code == 2
    assert "bad.csv" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--data", str(bad)])
    assert r.exit_code == 2 and "no such model directory" in r.output


def test_sigkill_mid_training_then_resume_gives_the_uninterrupted_weights(tmp_path, data_files):
    train, _ = data_files
    # One thread everywhere: the in-process and subprocess runs must reduce in the same order.
    args = ["--data", str(train), "--epochs", "3", "--checkpoint-every", "2", "--precision",
            "fp32", "--seed", "3", "--threads", "1", *SMALL]  # fmt: skip
    ref = tmp_path / "ref"
    assert runner.invoke(app, ["train", "--out", str(ref), *args]).exit_code == 0

    out = tmp_path / "killed"
    ckpts = tmp_path / "killed.checkpoints"
    cmd = [sys.executable, "-m", "slimtext", "train", "--out", str(out), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and len([p for p in ckpts.iterdir() if p.name.startswith("step-")]) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists() or proc.returncode == 0
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", *args])
    assert r.exit_code == 0, r.output
    a = load_file(str(ref / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_out_that_is_not_a_model_dir_is_refused_before_training(tmp_path, data_files):
    train, _ = data_files
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "notes.txt").write_text("mine")
    for verb in (["train", "--data", str(train)], ["pretrain", "--data", str(train)]):
        r = runner.invoke(app, [*verb, "--out", str(proj), "--max-steps", "2", "--vocab-size",
                                "400", "--no-progress"])  # fmt: skip
        assert r.exit_code == 2 and "refusing to replace" in r.output, r.output
        assert "trained" not in r.output and "pretrained" not in r.output
    assert [p.name for p in proj.iterdir()] == ["notes.txt"]


def test_tensorboard_logs_end_up_in_the_model_directory(tmp_path, data_files, monkeypatch):
    # Without --checkpoint-every the run directory is temporary: the event files went with it.
    import types

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter (not a dependency)
        def __init__(self, logdir, purge_step=None):
            from pathlib import Path

            Path(logdir).mkdir(parents=True)
            self.f = open(Path(logdir) / "events.out", "w")  # noqa: SIM115

        def add_scalar(self, tag, value, step):
            self.f.write(f"{tag} {value} {step}\n")

        def close(self):
            self.f.close()

        flush = close

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        types.SimpleNamespace(SummaryWriter=Writer))  # fmt: skip
    train, _ = data_files
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "m"), *SMALL,
                            "--max-steps", "4"])  # fmt: skip
    assert r.exit_code == 0, r.output
    events = (tmp_path / "m" / "tensorboard" / "events.out").read_text()
    assert "loss" in events
    from slimtext.artifact import read_model_dir

    read_model_dir(tmp_path / "m")  # listed in the manifest: the directory still verifies


def test_demo_refuses_an_output_it_would_not_replace_before_training(tmp_path, monkeypatch):
    from slimtext.api import TextClassifier

    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    monkeypatch.setattr(TextClassifier, "fit", lambda *a, **k: pytest.fail("it trained first"))
    r = runner.invoke(app, ["demo", "--out", str(project)])
    assert r.exit_code != 0 and "refusing to replace" in r.output, r.output
    assert "Traceback" not in r.output


def test_a_finished_runs_checkpoints_give_way_and_a_second_run_on_them_is_refused(
    tmp_path, data_files
):
    # Left behind, a finished run's checkpoints stopped the next (cron) run into the same --out,
    # with --resume or without; two runs at once on one folder broke each other's checkpoints.
    train, _ = data_files
    args = ["train", "--data", str(train), "--out", str(tmp_path / "m"), *SMALL, "--max-steps",
            "4", "--checkpoint-every", "2"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.checkpoints" / "FINISHED").is_file()  # kept until the next run
    for extra in ([], ["--resume"]):  # which starts afresh over them, either way
        r = runner.invoke(app, args + extra)
        assert r.exit_code == 0 and "finished; starting afresh" in r.output, r.output
    with another_run(tmp_path / "m.checkpoints") as pid:  # another run holds them
        r = runner.invoke(app, args)
    assert r.exit_code != 0 and f"in use by another run (pid {pid})" in r.output, r.output
    # without checkpoints: two runs into one --out both trained, the last to finish won
    plain = ["train", "--data", str(train), "--out", str(tmp_path / "p"), *SMALL, "--max-steps",
             "2"]  # fmt: skip
    (tmp_path / "link").symlink_to(tmp_path)  # the same folder through a link
    # the same folder spelled apart; a run with checkpoints and one without: one lock
    others = [
        dict(out=tmp_path / "x" / ".." / "p"),
        dict(folder=tmp_path / "p.checkpoints", out=tmp_path / "link" / "p"),
    ]
    for other in others:
        with another_run(**other):
            r = runner.invoke(app, plain)
        assert r.exit_code == 2 and "is being written by another run (pid" in r.output, r.output
        assert "trained" not in r.output and not (tmp_path / "p").exists()
    assert runner.invoke(app, plain).exit_code == 0  # once the other run is done


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "interrupted (Ctrl-C)")],
)
def test_sigterm_stops_a_run_like_ctrl_c_with_one_line(tmp_path, data_files, sig, code, said):
    # SIGTERM (a scheduler's stop) killed the process at once, skipping every clean-up; Ctrl-C
    # exited 130 with a blank line. Both now say so, and what --resume would continue from.
    train, _ = data_files
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "slimtext", "train", "--out", str(out), "--data", str(train),
           "--epochs", "500", "--checkpoint-every", "2", *SMALL]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpts, deadline = tmp_path / "m.checkpoints", time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(ckpts.glob("step-*")):
        time.sleep(0.01)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == code and said in err and "Traceback" not in err, err
    assert re.search(r"checkpoints kept in .*m\.checkpoints \(newest step-\d+\).*--resume", err)
    assert not (out / "model.safetensors").exists()
    assert not list(tmp_path.glob(".m.tmp-*"))


def test_a_missing_extra_is_one_line_naming_the_pip_command(tmp_path, data_files, monkeypatch,
                                                            tiny_model_dir):  # fmt: skip
    # --init hf: without transformers and a QAT recipe without torchao were tracebacks (the
    # second one after measuring the teacher).
    import importlib.util

    train, _ = data_files
    monkeypatch.setitem(sys.modules, "transformers", None)
    (tmp_path / "bert").mkdir()
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "m"),
                            "--init", f"hf:{tmp_path / 'bert'}", *SMALL[2:]])  # fmt: skip
    assert r.exit_code == 2 and "pip install 'slimtext[hf]'" in r.output, r.output
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchao" else real(name, *a))  # fmt: skip
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "t"), *SMALL,
                            "--max-steps", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    qat = ["--recipe", "quantize:int8-dynamic,qat=1"]
    r = runner.invoke(app, ["compress", str(tmp_path / "t"), "--data", str(train), "--out",
                            str(tmp_path / "q"), *qat])  # fmt: skip
    assert r.exit_code == 2 and "pip install 'slimtext[quant]'" in r.output, r.output
    assert "Traceback" not in r.output and "teacher" not in r.output  # nothing measured first
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')  # a teacher too
    r = runner.invoke(app, ["compress", str(tiny_model_dir), "--data", str(train), "--out",
                            str(tmp_path / "d"), "--teacher", f"hf:{tmp_path / 'bert'}",
                            "--recipe", "distill:layers=1"])  # fmt: skip
    assert r.exit_code == 2 and "pip install 'slimtext[hf]'" in r.output, r.output


def test_out_dot_and_a_linked_out_are_refused_before_training(tmp_path, data_files, monkeypatch):
    # --out . replaced the working folder, leaving the shell in a deleted one (earlier: its
    # checkpoints went inside the folder it then refused to replace, after training); a linked
    # --out was swapped for a directory.
    train, _ = data_files
    work = tmp_path / "here"
    work.mkdir()
    monkeypatch.chdir(work)
    r = runner.invoke(app, ["train", "--data", str(train), "--out", ".", "--max-steps", "2",
                            "--checkpoint-every", "1", *SMALL])  # fmt: skip
    assert r.exit_code == 2 and "would replace the working folder" in r.output, r.output
    assert list(work.iterdir()) == [] and not (tmp_path / "here.checkpoints").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "link"),
                            "--max-steps", "1", *SMALL])  # fmt: skip
    assert r.exit_code == 2 and "is a symbolic link" in r.output, r.output
    assert (tmp_path / "link").is_symlink()


def test_logs_go_to_stderr_and_bad_settings_are_one_line(tmp_path, data_files, tiny_model_dir,
                                                        monkeypatch):  # fmt: skip
    train, test = data_files
    args = ["train", "--data", str(train), "--test", str(test), "--out", str(tmp_path / "m")]
    r = runner.invoke(app, [*args, *SMALL[:-1], "--epochs", "2", "--progress"])
    assert r.exit_code == 0, r.output
    assert "epoch 1:" in r.stderr and "epoch 1:" not in r.stdout  # tqdm.write went to stdout
    assert "accuracy" in r.stdout  # the test report is the result
    args = ["train", "--data", str(train), "--out", str(tmp_path / "big"), "--max-steps", "1"]
    r = runner.invoke(app, [*args, *SMALL[2:], "--max-length", "1000000000"])
    assert r.exit_code == 2 and "max_length must be <= 1,048,576" in r.output, r.output
    monkeypatch.setenv("SLIMTEXT_DIST_TIMEOUT", "abc")
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "d"),
                            "--nproc", "2", "--device", "cpu", *SMALL])  # fmt: skip
    assert r.exit_code == 2 and "SLIMTEXT_DIST_TIMEOUT must be a number" in r.output, r.output
    pytest.importorskip("onnxruntime")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("SLIMTEXT_CACHE", str(blocker))
    r = runner.invoke(app, ["predict", str(tiny_model_dir), "goal", "--backend", "onnxruntime"])
    assert r.exit_code == 2 and "cannot write the ONNX cache" in r.output, r.output


def test_yaml_paths_expand_home_and_json_can_be_turned_off(tmp_path, data_files, tiny_model_dir,
                                                          monkeypatch):  # fmt: skip
    train, test = data_files
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"out: ~/m_cfg\nmax_steps: 1\ndata: {train}\n")
    r = runner.invoke(app, ["train", "--config", str(cfg), *SMALL])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m_cfg" / "model.safetensors").is_file() and not (tmp_path / "~").exists()
    ev = tmp_path / "e.yaml"
    ev.write_text("json: true\n")
    r = runner.invoke(app, ["eval", str(tiny_model_dir), "--data", str(test), "--config", str(ev),
                            "--no-json"])  # fmt: skip
    assert r.exit_code == 0 and "macro-F1" in r.stdout and not r.stdout.startswith("{"), r.output


def test_predict_into_a_closed_pipe_stops_quietly(tiny_model_dir, tmp_path):
    lines = tmp_path / "many.txt"
    lines.write_text("goal match team\n" * 20000)
    cmd = f"{sys.executable} -m slimtext predict {tiny_model_dir} --file {lines} | head -1"
    cmd += " >/dev/null; echo ${PIPESTATUS[0]} >&2"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert r.stderr.strip().splitlines()[-1] == "141", r.stderr
    assert "error" not in r.stderr.lower(), r.stderr


def test_a_report_into_a_closed_pipe_exits_141_and_keeps_the_model(tiny_model_dir, tmp_path,
                                                                   data_files):  # fmt: skip
    train, test = data_files
    slim = f"{sys.executable} -m slimtext"
    out = tmp_path / "m"
    # the reader gone before the report: train lost its trained model, and both exited 1
    for cmd in (f"{slim} eval {tiny_model_dir} --data {test} --json",
                f"{slim} train --data {train} --test {test} --out {out} --max-steps 2 "
                + " ".join(SMALL)):  # fmt: skip
        r = subprocess.run(["bash", "-c", f"{cmd} | true; echo ${{PIPESTATUS[0]}} >&2"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.stderr.strip().splitlines()[-1] == "141", r.stderr
        assert "error" not in r.stderr.lower(), r.stderr
    assert (out / "model.safetensors").is_file()


def test_a_c_locale_trains_and_predicts_non_ascii_labels_and_paths(tmp_path):
    import os

    texts = [f"{w} {i}" for i in range(30) for w in ("goal match team", "bank profit rate")]
    labels = ["équipe", "ñandú"] * 30
    data = tmp_path / "d.jsonl"
    rows = [json.dumps({"text": t, "label": y}) for t, y in zip(texts, labels, strict=True)]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "modèle"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
           "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": ""}  # fmt: skip
    slim = [sys.executable, "-m", "slimtext"]
    r = subprocess.run([*slim, "train", "--data", str(data), "--out", str(out), "--max-steps",
                        "2", *SMALL], capture_output=True, env=env, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode(errors="replace")  # the model card's "é" failed
    r = subprocess.run([*slim, "predict", str(out), "goal match"], capture_output=True, env=env,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode(errors="replace")  # the path, then the JSON
    assert set(json.loads(r.stdout.decode("utf-8"))["probs"]) == {"équipe", "ñandú"}


def test_attention_size_is_an_option_of_train(tmp_path, data_files):
    train, _ = data_files
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "m"),
                            "--max-steps", "1", *SMALL, "--attention-size", "8"])  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())["model"]
    assert cfg["attention_size"] == 8


def test_no_progress_hides_the_bars_not_the_messages_a_log_keeps(tmp_path, data_files):
    train, _ = data_files
    args = ["--epochs", "6", "--patience", "1", "--lr", "1e-9", *SMALL]
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "m"), *args])
    assert r.exit_code == 0, r.output
    # --no-progress is what a CI job sets: it hid these with the bars
    assert "rows held out" in r.stderr and "epoch 1: valid accuracy" in r.stderr
    assert "early stop" in r.stderr and "keep-best: the weights of epoch 1 are kept" in r.stderr
    assert "tokens learned" in r.stderr  # 400 asked, fewer in 68 texts
    assert "%|" not in r.stderr and "step/s" not in r.stderr  # no bar drawn


def test_serve_on_a_port_in_use_is_one_error_line(tiny_model_dir):
    import socket

    pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(app, ["serve", str(tiny_model_dir), "--port", str(port)])
    # uvicorn said it after loading the model, and exited 3
    assert r.exit_code == 2 and "cannot listen on 127.0.0.1" in r.output, r.output


def test_fp16_on_a_cpu_is_refused_before_the_data_is_read(tmp_path):
    # it was refused only after the data had been read and the tokenizer learnt
    never = tmp_path / "never-read.csv"  # missing too: the precision is checked first
    r = runner.invoke(app, ["train", "--data", str(never), "--out", str(tmp_path / "m"),
                            "--precision", "fp16", "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 2 and "fp16 training needs a CUDA GPU" in r.output, r.output


def test_predict_top_k_gives_the_most_likely_labels_best_first(tiny_model_dir):
    def lines(*args):
        r = runner.invoke(app, ["predict", str(tiny_model_dir), "goal match team", *args])
        assert r.exit_code == 0, r.output
        return [json.loads(x) for x in r.stdout.splitlines()]

    (full,) = lines()
    (top,) = lines("--top-k", "2")
    best = sorted(full["probs"].items(), key=lambda kv: -kv[1])[:2]
    assert list(top["probs"].items()) == best and top["label"] == full["label"]
    r = runner.invoke(app, ["predict", str(tiny_model_dir), "x", "--top-k", "0"])
    assert r.exit_code == 2 and "--top-k must be >= 1" in r.output
    # more than the model has: refused, as the server refuses it (it was silently cut)
    n = len(full["probs"])
    assert len(lines("--top-k", str(n))[0]["probs"]) == n
    r = runner.invoke(app, ["predict", str(tiny_model_dir), "x", "--top-k", str(n + 1)])
    assert r.exit_code == 2 and f"--top-k is {n + 1} but the model has {n} labels" in r.output


def test_predict_from_a_pipe_answers_each_line_as_it_arrives(tiny_model_dir, tmp_path):
    # A person typing, or `tail -f log | slimtext predict`: each line's answer must come before
    # the next line is written (it used to wait for 1,024 lines or the end of the input).
    ref = runner.invoke(app, ["predict", str(tiny_model_dir), "goal match team", "bank profit"])
    want = [json.loads(x) for x in ref.stdout.splitlines()]
    cmd = [sys.executable, "-m", "slimtext", "predict", str(tiny_model_dir)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got = []
        # the second line carries a BOM, as `cat a.txt b.txt` leaves one mid-stream
        for line in (b"goal match team\n", "\ufeffbank profit\n".encode()):
            p.stdin.write(line)
            p.stdin.flush()
            ready, _, _ = select.select([p.stdout], [], [], 120)
            assert ready, "no answer while the input stays open"
            got.append(json.loads(p.stdout.readline()))
        p.stdin.write("\u200b\n".encode())
        p.stdin.close()  # an invisible-only line is an empty text, answered in line
        got.append(json.loads(p.stdout.readline()))
        assert p.wait(timeout=60) == 0
    finally:
        p.kill()
    assert got[:2] == want
    assert got[2]["label"] is None and "line 3" in got[2]["error"]


def test_text_col_for_a_csv_beside_a_test_folder_and_empty_paths(tmp_path, toy_data):
    # --text-col (for the CSV) failed a --test folder of class folders beside it
    texts, labels = toy_data
    with open(tmp_path / "tr.csv", "w", newline="") as f:
        csv.writer(f).writerows([("body", "topic"), *zip(texts[:75], labels[:75], strict=True)])
    for t, lab in zip(texts[75:], labels[75:], strict=True):
        (tmp_path / "fold" / lab).mkdir(parents=True, exist_ok=True)
        (tmp_path / "fold" / lab / f"{abs(hash(t))}.txt").write_text(t)
    args = ["train", "--data", str(tmp_path / "tr.csv"), "--text-col", "body", "--label-col",
            "topic", "--out", str(tmp_path / "m"), "--max-steps", "2", *SMALL]  # fmt: skip
    r = runner.invoke(app, [*args, "--test", str(tmp_path / "fold")])
    assert r.exit_code == 0, r.output
    assert "test" in json.loads((tmp_path / "m" / "metrics.json").read_text())
    # an unset $DATA or $TEST: "" was dropped (fit(None): a traceback; no test, no word)
    for flag in ("--data", "--test"):
        bad = [*args[:1], *args[3:]] if flag == "--data" else args
        r = runner.invoke(app, [*bad, flag, ""])
        assert r.exit_code == 2 and f"{flag}: empty path" in r.output, r.output


def test_an_out_name_too_long_for_its_siblings_is_refused_up_front(tmp_path, data_files):
    # 244-255 bytes: a traceback from the checkpoint sibling's name; 240-243: the whole run,
    # then a failed save of its temporary copy
    train, _ = data_files
    for n in (242, 250):
        out = tmp_path / ("k" * n)
        r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), *SMALL])
        assert r.exit_code == 2 and "the name is too long" in r.output, r.output
        assert "trained" not in r.output


@pytest.mark.parametrize("cmd", ["train", "pretrain", "compress", "bench", "export", "demo"])
def test_an_empty_out_is_refused_not_the_working_folder(tmp_path, tiny_model_dir, cmd, monkeypatch):
    # typer made "" Path("."): in an empty folder `train --out ''` replaced the working folder
    monkeypatch.chdir(tmp_path)
    args = {"train": ["train", "--data", "x.csv"], "pretrain": ["pretrain", "--data", "x.txt"],
            "compress": ["compress", str(tiny_model_dir), "--data", "x.csv"],
            "bench": ["bench", str(tiny_model_dir), "--data", "x.csv"],
            "export": ["export", str(tiny_model_dir)], "demo": ["demo"]}[cmd]  # fmt: skip
    r = runner.invoke(app, [*args, "--out", ""])
    assert r.exit_code == 2 and "empty output path" in r.output, r.output
    assert list(tmp_path.iterdir()) == []


def test_fixed_choice_options_take_any_case(tmp_path, data_files):
    # `--precision FP32` was "precision must be one of ...": only --strategy and --log-level
    # took any case
    train, _ = data_files
    out = tmp_path / "m"
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--max-steps", "2",
                            "--model", "Attention", "--vocab-size", "400", "--max-length", "32",
                            "--precision", "FP32", "--schedule", "Cosine", "--long-text", "Chunks",
                            "--tokenizer", "WordPiece", "--on-bad", "Skip", "--device", "CPU",
                            "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert json.dumps(cfg).count('"chunks"') >= 1 and cfg["train"]["precision"] == "fp32"
    r = runner.invoke(app, ["predict", str(out), "goal", "--backend", "Torch", "--device", "Cpu"])
    assert r.exit_code == 0 and json.loads(r.stdout)["label"], r.output


@pytest.mark.parametrize(
    ("given", "recorded"),
    [(["--class-weight", "Balanced"], "balanced"),
     (["--class-weight", "money=3, tech=0.5"], {"money": 3.0, "tech": 0.5}),
     (["--class-weight", '{"sport": 2}'], {"sport": 2.0}),
     ("yaml", {"money": 4.0, "sport": 1.5}),
     (["--class-weight", "none"], None)],
)  # fmt: skip
def test_class_weights_from_flags_or_a_yaml_mapping_are_recorded(
    tmp_path, data_files, given, recorded
):
    train, _ = data_files
    out = tmp_path / "m"
    if given == "yaml":  # a mapping is the natural YAML; a flag takes text
        (tmp_path / "c.yaml").write_text("class_weight:\n  money: 4\n  sport: 1.5\n")
        given = ["--config", str(tmp_path / "c.yaml")]
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--max-steps", "1",
                            "--model", "attention", "--vocab-size", "400", "--max-length", "32",
                            "--no-progress", *given])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["train"]["class_weight"] == recorded
    card = (out / "README.md").read_text()
    assert ("Class weights:" in card) == (recorded is not None)
    if isinstance(recorded, dict):
        assert all(f"`{k}` {v:g}" in card for k, v in recorded.items()), card


def test_metric_and_label_smoothing_are_command_line_options(tmp_path, data_files):
    # keep-best followed accuracy from the command line: imbalanced data wants macro_f1
    train, _ = data_files
    out = tmp_path / "m"
    base = ["train", "--data", str(train), "--out", str(out), "--max-steps", "1", "--model",
            "attention", "--vocab-size", "400", "--no-progress"]  # fmt: skip
    r = runner.invoke(app, [*base, "--metric", "Macro_F1", "--label-smoothing", "0.1"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["metric"] == "macro_f1" and cfg["label_smoothing"] == 0.1
    r = runner.invoke(app, [*base, "--metric", "f1"])
    assert r.exit_code != 0 and "metric must be accuracy, macro_f1 or loss" in r.output


@pytest.mark.parametrize(
    ("value", "said"),
    [("heavy", "expected balanced"), ("money=", "expected balanced"), ("=3", "expected balanced"),
     ("money=-1", "positive number"), ("money=nan", "positive number")],
)  # fmt: skip
def test_bad_class_weights_fail_before_the_data_is_read(tmp_path, value, said):
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "absent.csv"), "--out",
                            str(tmp_path / "m"), "--class-weight", value])  # fmt: skip
    assert r.exit_code == 2 and said in r.output and "--class-weight" in r.output, r.output


@pytest.mark.parametrize(
    ("yaml", "said"),
    [("class_weight:\n  money: high\n", "positive number"),
     # YAML reads yes/no/on/off as true/false: the label "yes" became "true", and training
     # failed after the tokenizer was learnt, naming a label 'true' nobody wrote
     ("class_weight:\n  yes: 3\n  no: 1\n", "quote it"),
     ("class_weight:\n  ~: 3\n", "quote it"),
     # a number: "'int' object has no attribute 'strip'"
     ("class_weight: 3\n", "expected balanced"),
     # two spellings of one label: JSON kept the last one's weight, without a word
     ("class_weight:\n  1: 2\n  '1': 3\n", "are one label"),
     ("class_weight:\n  1.5: 2\n", "non-integral")],
)  # fmt: skip
def test_bad_class_weights_in_a_yaml_file_name_the_file_and_key(tmp_path, yaml, said):
    (tmp_path / "c.yaml").write_text(yaml)
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "absent.csv"), "--out",
                            str(tmp_path / "m"), "--config", str(tmp_path / "c.yaml")],
                       env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})  # fmt: skip
    # the message is in a box: wrapped wherever the temporary path's length puts it
    said_all = " ".join(r.output.replace("\u2502", " ").split())
    assert r.exit_code == 2 and said in said_all, r.output
    assert "c.yaml" in said_all and "'class_weight'" in said_all, r.output


def test_a_yaml_class_weight_key_is_read_as_the_data_loaders_read_labels():
    # `1.0:` in YAML is a float key: it became the label "1.0", which a data file's label 1.0
    # (read as "1") is not; the Python API read it as "1"
    from slimtext.cli import _yaml_class_weight

    assert json.loads(_yaml_class_weight({1.0: 2, 2: 0.5, "spam": 3}, "c.yaml")) == {
        "1": 2, "2": 0.5, "spam": 3}  # fmt: skip


def test_a_class_weight_the_data_lacks_names_the_labels(tmp_path, data_files):
    train, _ = data_files
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "m"),
                            "--max-steps", "1", "--model", "attention", "--vocab-size", "400",
                            "--class-weight", "finance=2", "--no-progress"])  # fmt: skip
    assert r.exit_code != 0 and "'finance'" in r.output and "money" in r.output, r.output
    assert not (tmp_path / "m").exists()
    # refused as soon as the labels are read: not after minutes of tokenizer learning
    assert "tokenizer: learning" not in r.output, r.output


def test_a_cased_tokenizer_from_the_command_line_keeps_case_in_the_model(tmp_path, data_files):
    train, _ = data_files
    out = tmp_path / "m"
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(out), "--max-steps", "1",
                            "--model", "attention", "--vocab-size", "400", "--max-length", "32",
                            "--tokenizer", "BPE-Cased", "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["train"]["tokenizer"] == "bpe-cased"
    from slimtext.tokenizer import load_tokenizer

    tok = load_tokenizer(out / "tokenizer.json")
    assert tok.encode(["GOAL"], 8) != tok.encode(["goal"], 8)


def test_a_missing_tokenizer_file_is_said_before_the_data_is_read(tmp_path, toy_data):
    # The data was read (minutes on a large file) before "--tokenizer tok.jsn: not found"; a
    # data file that stops at its bad line shows which came first. The API does the same.
    bad = tmp_path / "train.csv"
    bad.write_text("text,label\n" + "".join(f"a text {i},x\n" for i in range(50)) + ",y\n")
    r = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "m"),
                            "--tokenizer", str(tmp_path / "tok.jsn"), "--no-progress"])  # fmt: skip
    assert r.exit_code == 2 and "tok.jsn: tokenizer file not found" in r.output, r.output
    assert "train.csv" not in r.output
    from slimtext.tokenizer import TokenizerError

    with pytest.raises(TokenizerError, match="tok.jsn"):
        slimtext.TextClassifier(tokenizer=str(tmp_path / "tok.jsn"), verbose=False).fit(str(bad))


def test_a_missing_tokenizer_file_is_said_first_by_a_resume_with_no_checkpoint(tmp_path, toy_data):
    # `--resume` always on (a job script's first run) starts afresh where there is no
    # checkpoint, and reads --tokenizer then: it was checked only after the data was read
    bad = tmp_path / "train.csv"
    bad.write_text("text,label\n" + "".join(f"a text {i},x\n" for i in range(50)) + ",y\n")
    r = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "m"),
                            "--tokenizer", str(tmp_path / "tok.jsn"), "--no-progress",
                            "--resume"])  # fmt: skip
    assert r.exit_code == 2 and "tok.jsn: tokenizer file not found" in r.output, r.output
    assert "train.csv" not in r.output
    from slimtext.tokenizer import TokenizerError

    clf = slimtext.TextClassifier(tokenizer=str(tmp_path / "tok.jsn"), verbose=False)
    with pytest.raises(TokenizerError, match="tok.jsn"):
        clf.fit(str(bad), checkpoint_dir=tmp_path / "ck", resume=True)


@pytest.mark.parametrize(
    ("args", "said"),
    [(["train", "--data", "x.csv", "--out", "m", "--epochs", "abc"], "Invalid value for"),
     (["train", "--out", "m"], "Missing option '--data'"),
     (["train", "--data", "x.csv", "--out", "m", "--epoch", "3"], "No such option: --epoch"),
     (["predict", "m", "x", "--threads", "0"], "Invalid value for '--threads'"),
     (["nosuch"], "No such command 'nosuch'")],
)  # fmt: skip
def test_an_option_parser_error_is_one_error_line_and_exit_2(tmp_path, args, said):
    # click drew a box of usage and help lines: `grep '^error:'` in a job's log found nothing
    r = subprocess.run([sys.executable, "-m", "slimtext", *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: ") and said in line and "--help)" in line, line


@pytest.mark.parametrize("stop", ["sigterm", "closed output"])
def test_predict_on_a_live_pipe_stops_cleanly(tiny_model_dir, stop, tmp_path):
    # the reader thread, blocked in a read of stdin, made the interpreter's shutdown abort
    # ("Fatal Python error: _enter_buffered_busy", exit 134) instead of exiting 143 / 141
    cmd = f"{sys.executable} -m slimtext predict {tiny_model_dir} --threads 1"
    if stop == "closed output":
        # the second line is written only once `head` has gone, so its answer meets a closed
        # pipe however slowly predict starts (timed sleeps raced on a loaded CI machine: rc=0)
        gone = tmp_path / "head-gone"
        feed = f"echo goal; while [ ! -e {gone} ]; do sleep 0.1; done; echo bank; sleep 4"
        cmd = f"({feed}) | {cmd} | (head -1; exec 0<&-; touch {gone}); "
        cmd += "echo rc=${PIPESTATUS[1]} >&2"
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
        assert json.loads(r.stdout)["label"] and "rc=141" in r.stderr, r.stderr
        assert "Fatal" not in r.stderr, r.stderr
        return
    p = subprocess.Popen(cmd.split(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)  # fmt: skip
    try:
        p.stdin.write(b"goal match\n")
        p.stdin.flush()
        assert json.loads(p.stdout.readline())["label"]
        p.send_signal(signal.SIGTERM)  # the input still open: the reader is blocked in a read
        err = p.communicate(timeout=60)[1].decode()
    finally:
        p.kill()
    assert p.returncode == 143 and "stopped by SIGTERM" in err and "Fatal" not in err, err


def test_a_ctrl_c_inside_an_import_is_not_met_by_a_second_import():
    # Ctrl-C landing inside `import torch` in eval: matching `except (*_user_errors(), ...)`
    # imported torch again, half-initialised: "duplicate registrations", traceback, exit 1
    from slimtext.cli import _user_errors

    try:
        raise KeyboardInterrupt
    except BaseException:
        assert _user_errors() == ()
    assert ValueError in _user_errors()


def test_predict_input_and_output_edges_are_one_error_line(tiny_model_dir, tmp_path):
    import gzip

    from slimtext.cli import _lines_to_eof

    def run(args, **kw):
        cmd = [sys.executable, "-m", "slimtext", "predict", str(tiny_model_dir), *args]
        return subprocess.run(cmd, capture_output=True, timeout=120, **kw)

    # a codec that is not a text encoding: a LookupError traceback, exit 1
    r = run(["--encoding", "rot13"], input=b"goal\n")
    assert r.returncode == 2 and b"'rot13': not a text encoding" in r.stderr, r.stderr
    r = runner.invoke(app, ["eval", str(tiny_model_dir), "--data", "x.csv", "--encoding", "hex"])
    assert r.exit_code == 2 and "not a text encoding" in r.output
    # the output failing is the output's error (it named the input file, or "None")
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "slimtext", "predict", str(tiny_model_dir),
                            "goal"], stdout=full, stderr=subprocess.PIPE, timeout=120)  # fmt: skip
    assert r.returncode == 2 and b"cannot write the output (stdout)" in r.stderr, r.stderr
    # a .gz file is read through gzip; gzip bytes on stdin are named
    f = tmp_path / "t.txt.gz"
    f.write_bytes(gzip.compress(b"goal match\nbank\n"))
    r = run(["--file", str(f)])
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    r = run([], input=gzip.compress(b"goal\n"))
    assert r.returncode == 2 and b"gzip-compressed" in r.stderr, r.stderr

    class Terminal:  # Ctrl-D ends a last line without "\n"; reading on would wait for more
        def __init__(self):
            self.lines = [b"goal\n", b"partial"]

        def readline(self):
            assert self.lines, "read past the end of a terminal's input"
            return self.lines.pop(0)

    assert list(_lines_to_eof(Terminal())) == [b"goal\n", b"partial"]


def test_library_import_chatter_stays_off_the_terminal():
    # torchao 0.18, imported by transformers wherever it is installed, logged "Failed to load"
    # for its CUDA / other-Python extensions and torch an Enum deprecation: three lines before
    # every `--init hf:` or bench run
    pytest.importorskip("torchao")
    code = ("import slimtext.cli as c; c._run = lambda app: __import__('torchao') and 0; "
            "c.main()")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Failed to load" not in r.stderr and "register_constant" not in r.stderr, r.stderr


def test_help_texts_survive_rich_markup():
    # typer renders help through rich, which takes `[@...]` or `[word]` for a markup tag and
    # drops it: `train --help` showed `hf:NAME[:CONFIG]`, the `[@SPLIT]` gone
    import typer.main

    Text = pytest.importorskip("rich.text").Text  # (typer-slim draws help without rich)
    for name, command in typer.main.get_command(app).commands.items():
        helps = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in helps:
            assert Text.from_markup(text).plain == text, (name, text)


def test_a_closed_or_full_stdout_or_stdin_is_one_error_line(tiny_model_dir, data_files, tmp_path):
    # The shell's `>&-` / `<&-` leave Python's sys.stdout / sys.stdin None: predict died with
    # an AttributeError traceback (exit 1), eval's report into /dev/full with an OSError one
    slim = f"{sys.executable} -m slimtext"
    _, test = data_files
    cases = {
        f"{slim} predict {tiny_model_dir} goal >&-": "cannot write the output (stdout): closed",
        f"{slim} predict {tiny_model_dir} <&-": "stdin is closed",
        f"{slim} eval {tiny_model_dir} --data {test} --json --no-progress >/dev/full":
            "cannot write the output (stdout): No space left on device",
    }  # fmt: skip
    for cmd, said in cases.items():
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
        errors = [x for x in r.stderr.splitlines() if not x.startswith(("data:", "note:"))]
        assert r.returncode == 2 and len(errors) == 1, (cmd, r.stderr)
        assert errors[0].startswith("error: ") and said in errors[0], (cmd, r.stderr)


def test_help_into_a_full_closed_or_gone_stdout_is_said_as_every_output_is():
    # the help is written by click and rich: into /dev/full a traceback, into a closed stdout
    # nothing and exit 0, into a pipe whose reader left exit 1 (kept for bugs)
    slim = f"{shlex.quote(sys.executable)} -m slimtext"
    cases = {
        f"{slim} --help >/dev/full": (2, "No space left on device"),
        f"{slim} train --help >&-": (2, "closed"),
        f"{slim} predict --help | true": (141, None),
    }
    for cmd, (code, said) in cases.items():
        cmd += "; echo rc=${PIPESTATUS[0]} >&2"
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
        *lines, rc = r.stderr.strip().splitlines()
        assert rc == f"rc={code}", (cmd, r.stderr)
        if said is None:
            assert not lines, (cmd, r.stderr)
        else:
            assert lines == [f"error: cannot write the output (stdout): {said}"], (cmd, r.stderr)


def test_a_closed_descriptor_is_not_taken_by_the_next_file_opened():
    # with fd 1 closed, the next file opened (a model file, a save's temporary file) became
    # the process's stdout, where C code and child processes (torchrun's ranks) write
    code = ("import os, sys, slimtext.cli as c; "
            "c._run = lambda app: sys.stderr.write(f'fd {os.open(os.devnull, 0)}') and 0; "
            "c.main()")  # fmt: skip
    for closed in ("<&-", ">&-"):
        cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {closed}"
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stderr.startswith("fd ") and int(r.stderr[3:]) > 2, r


def test_demo_report_into_a_full_or_closed_stdout_is_one_error_line(tmp_path):
    # demo prints its report with print(): into /dev/full the interpreter's last flush failed
    # ("Exception ignored ... OSError", exit 120); into a closed stdout it said nothing, exit 0
    code = ("import slimtext.demo as d, slimtext.cli as c, sys; "
            "d.run_demo = lambda *a, emit=print, **k: emit('report ' * 100); "
            "sys.argv = ['slimtext', 'demo']; c.main()")  # fmt: skip
    for where in (">/dev/full", ">&-", "| true"):
        cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {where}; echo rc=$? >&2"
        if where == "| true":
            cmd = cmd.replace("echo rc=$?", "echo rc=${PIPESTATUS[0]}")
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
        *said, rc = r.stderr.strip().splitlines()
        if where == "| true":  # the reader gone: quiet, as every other command
            assert rc == "rc=141" and not said, r.stderr
        else:
            assert rc == "rc=2" and len(said) == 1, r.stderr
            assert said[0].startswith("error: cannot write the output (stdout)"), r.stderr


@pytest.mark.parametrize("name", ["d.csv", "d.TSV", "d.jsonl.gz", "d.json", "d.parquet"])
def test_predict_file_refuses_a_data_file(tiny_model_dir, tmp_path, name):
    # each raw line was classified as a text: the CSV header, the JSON syntax, other columns
    f = tmp_path / name
    f.write_text("text,label\ngoal match,sport\n")
    r = runner.invoke(app, ["predict", str(tiny_model_dir), "--file", str(f)])
    assert r.exit_code == 2 and not r.stdout.strip(), r.output
    assert f"{f}: --file reads plain text" in r.output and "eval" in r.output, r.output


def test_predict_file_reads_a_gzipped_named_pipe_through_gzip(tiny_model_dir, tmp_path):
    import gzip
    import os
    import threading

    fifo = tmp_path / "texts.txt.gz"
    os.mkfifo(fifo)
    feed = threading.Thread(target=fifo.write_bytes, args=(gzip.compress(b"goal\nbank\n"),))
    feed.start()
    cmd = [sys.executable, "-m", "slimtext", "predict", str(tiny_model_dir), "--file", str(fifo)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    feed.join(timeout=10)
    ref = runner.invoke(app, ["predict", str(tiny_model_dir), "goal", "bank"]).stdout
    assert r.returncode == 0 and r.stdout == ref, r.stderr
