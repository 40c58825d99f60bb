"""GPT-2 weights from Hugging Face transformers into our GPT: the same logits, the shape from the
checkpoint's own config, contradictions refused, and fine-tuning end to end (train.py, then
generate.py from its checkpoint). A tiny random GPT-2 saved with ``save_pretrained`` stands in
for OpenAI's: nothing is downloaded (HF_HUB_OFFLINE=1 everywhere)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT

transformers = pytest.importorskip("transformers")

from article_gpt.data.tokenizer import get_encoding  # noqa: E402
from article_gpt.errors import ConfigError  # noqa: E402
from article_gpt.model.gpt import GPT, GPTConfig  # noqa: E402
from article_gpt.model.pretrained import load_pretrained, resolve_shape  # noqa: E402

SHAPE = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 50257}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random GPT-2 (every weight, bias and LayerNorm gain random, so a wrong mapping shows)."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(**SHAPE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            gain = ".ln_" in name and name.endswith(".weight")  # LayerNorm gains around 1
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if gain else 0.0))
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    hf.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    return transformers.GPT2LMHeadModel.from_pretrained(hf_dir).float()


def ours(hf_dir, **overrides) -> GPT:
    model_cfg = resolve_shape({"pretrained": str(hf_dir), "dropout": 0.0, "loss_chunk_size": 0, **overrides})
    model = GPT(GPTConfig(**{k: v for k, v in model_cfg.items() if k != "pretrained"}))
    load_pretrained(model, str(hf_dir))
    return model


def test_shape_comes_from_the_checkpoint(hf_dir):
    cfg = resolve_shape({"pretrained": str(hf_dir), "heads": None, "block_size": None, "dropout": 0.1})
    assert cfg == {"pretrained": str(hf_dir), "vocab_size": 50257, "block_size": 64, "embedding_dim": 32,
                   "num_layers": 2, "heads": 4, "head_size": 8, "bias": True, "tie_weights": True,
                   "gelu_approximate": "tanh", "dropout": 0.1}
    assert resolve_shape({"pretrained": str(hf_dir), "heads": 4, "embedding_dim": 32})["heads"] == 4  # agreeing


def test_training_mode_logits_and_loss_equal_transformers(hf_dir, hf_model):
    model = ours(hf_dir).train()  # dropout 0: training mode must not change the math
    hf_model.train()
    idx = torch.randint(0, 50257, (3, 64), generator=torch.Generator().manual_seed(1))
    logits, loss = model(idx[:, :-1], idx[:, 1:])
    theirs = hf_model(idx[:, :-1]).logits
    torch.testing.assert_close(logits, theirs, atol=1e-4, rtol=0)
    ref = torch.nn.functional.cross_entropy(theirs.reshape(-1, 50257), idx[:, 1:].reshape(-1))
    assert abs(loss.item() - ref.item()) < 1e-4
    hf_model.eval()


def test_kv_cache_inference_equals_transformers(hf_dir, hf_model):
    model = ours(hf_dir).eval()
    idx = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = hf_model(idx).logits
        caches = model.new_caches(2)
        prefill, _ = model(idx[:, :10], caches=caches)  # the prompt at once, then one token per step
        steps = [prefill] + [model(idx[:, t : t + 1], caches=caches)[0] for t in range(10, 40)]
    torch.testing.assert_close(torch.cat(steps, dim=1), theirs[:, 9:], atol=1e-4, rtol=0)


def test_shorter_block_cuts_the_position_table(hf_dir, hf_model):
    model = ours(hf_dir, block_size=16).eval()
    assert model.pos_emb.weight.shape == (16, 32)
    assert torch.equal(model.pos_emb.weight, hf_model.transformer.wpe.weight[:16])
    idx = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, _ = model(idx, idx)
        torch.testing.assert_close(logits, hf_model(idx).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("override", "line"), [
    ({"heads": 8}, "model.heads=8: contradicts model.pretrained={d}, which has heads=4; leave it null"),
    ({"embedding_dim": 64}, "model.embedding_dim=64: contradicts model.pretrained={d}, which has embedding_dim=32"),
    ({"tie_weights": False}, "model.tie_weights=False: contradicts"),
    ({"block_size": 128}, "model.block_size=128: must be between 1 and the 64 positions of model.pretrained={d}"),
])
def test_contradicting_shape_refused(hf_dir, override, line):
    with pytest.raises(ConfigError) as err:
        resolve_shape({"pretrained": str(hf_dir), **override})
    assert line.format(d=hf_dir) in str(err.value)


def test_missing_directory_and_other_architectures_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.pretrained=./nowhere: no such directory"):
        resolve_shape({"pretrained": "./nowhere"})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match="model_type=llama; only GPT-2 checkpoints load"):
        resolve_shape({"pretrained": str(tmp_path)})


def test_hub_name_offline_without_cache_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache; HF_HUB_OFFLINE=1 (autouse)
    with pytest.raises(ConfigError) as err:
        resolve_shape({"pretrained": "gpt2"})
    line = str(err.value)
    assert line.startswith("model.pretrained=gpt2: cannot fetch its config.json from the Hugging Face hub (")
    assert line.endswith("); offline, pass a local directory") and "\n" not in line


def windows_loss(hf_model, ids: list[int], block: int, n: int) -> float:
    """transformers' mean loss over the first ``n`` fixed validation windows of ``block + 1`` tokens."""
    x = torch.tensor([ids[i * block : i * block + block + 1] for i in range(n)])
    with torch.no_grad():
        logits = hf_model(x[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1)).item()


@pytest.mark.slow
def test_finetune_end_to_end_then_generate(run_cli, outputs, hf_dir, hf_model):
    env = {"HF_HUB_OFFLINE": "1"}
    run_cli("train.py", "experiment=finetune_gpt2", f"model.pretrained={hf_dir}", "model.block_size=16",
            "trainer=debug", "logger=none", "sample.max_new_tokens=4", extra_env=env, timeout=900)
    (run_dir,) = (outputs / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    # The pre-training validation (trainer=debug: 2 batches of 4 windows) is transformers' loss on
    # those windows: the run started from the checkpoint's weights, not from a random init.
    val_ids = get_encoding("gpt2").encode_ordinary((ROOT / "data" / "val.txt").read_text(encoding="utf-8"))
    step0, before = metrics["val_curve"][0]
    assert step0 == 0 and before == pytest.approx(windows_loss(hf_model, val_ids, 16, 8), abs=1e-4)

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["pretrained"] == str(hf_dir)  # where the weights started, beside a plain GPTConfig
    assert hp["model"] == {"vocab_size": 50257, "block_size": 16, "embedding_dim": 32, "num_layers": 2, "heads": 4,
                           "head_size": 8, "bias": True, "tie_weights": True, "gelu_approximate": "tanh",
                           "dropout": 0.1, "loss_chunk_size": 1024,  # and GPT-2's own architecture:
                           "position": "learned", "qk_norm": False, "mlp_activation": "gelu",
                           "zero_init_proj": False, "logit_softcap": None}
    trained = ckpt["state_dict"]["model.blocks.0.attn.qkv.weight"]
    start = hf_model.transformer.h[0].attn.c_attn.weight.t()
    assert not torch.equal(trained, start) and (trained - start).abs().max() < 0.05  # fine-tuned, not replaced

    out = run_cli("generate.py", f"ckpt={run_dir}", "prompt=Backpropagation is", "max_new_tokens=5",
                  "temperature=0", extra_env=env)
    assert out.stdout.startswith("Backpropagation is") and len(out.stdout.strip()) > len("Backpropagation is")


def test_contradicting_override_is_one_line_from_train_py(run_cli, hf_dir):
    proc = run_cli("train.py", "model=gpt2_pretrained", f"model.pretrained={hf_dir}", "model.heads=8",
                   "trainer=debug", "logger=none", check=False, extra_env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"error: model.heads=8: contradicts model.pretrained={hf_dir}, which has heads=4; "
        "leave it null to take the checkpoint's"]

