"""The ``generate`` and ``chat`` verbs, the chat loop driven by scripted input, and checkpoint loading."""

import io
import json

import pytest

from glassformer.cli import main
from glassformer.generate import GenerationConfig, generate
from glassformer.generate.chat import ChatSession
from glassformer.generate.cli import run_chat
from glassformer.generate.loading import load_checkpoint
from tests.generate.conftest import tiny_gpt


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    """A glassformer model folder with its tokenizer, as training would leave it."""
    path = tmp_path_factory.mktemp("tiny-gpt")
    tiny_gpt("gpt2").save(path)
    tokenizer.save(path)
    return path


def test_generate_verb_streams_the_continuation(folder, tokenizer, capsys):
    assert main(["generate", str(folder), "--prompt", "hello", "--max-new-tokens", "12", "--ignore-eos"]) == 0
    printed = capsys.readouterr().out
    ckpt = load_checkpoint(folder)
    expected = generate(ckpt.model, "hello", tokenizer=tokenizer, max_new_tokens=12).texts[0]
    assert printed == "hello" + expected + "\n"
    assert main(["generate", str(folder), "--prompt", "hi", "--strategy", "beam", "--num-beams", "3",
                 "--max-new-tokens", "5"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["generate", str(folder), "--prompt", "hello", "--max-new-tokens", "12", "--ignore-eos",
                 "--prompt-lookup", "3"]) == 0  # fmt: skip
    assert capsys.readouterr().out == printed
    assert main(["generate", str(folder), "--prompt", "hi", "--strategy", "sample", "--seed", "1",
                 "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8", "--max-new-tokens", "5"]) == 0  # fmt: skip
    capsys.readouterr()
    # past the 48-position context with a sliding window
    assert main(["generate", str(folder), "--prompt", "hello", "--max-new-tokens", "80", "--ignore-eos",
                 "--slide-window"]) == 0  # fmt: skip
    slid = generate(ckpt.model, "hello", tokenizer=tokenizer, max_new_tokens=80, slide_window=True).texts[0]
    assert capsys.readouterr().out == "hello" + slid + "\n"
    assert len(tokenizer.encode(slid)) == 80


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "", "--max-new-tokens", "3"], "the prompt is empty"),
        (["--prompt", "abc", "--strategy", "sample", "--top-p", "1.5"], "top_p=1.5: must be in (0, 1]"),
        (["--prompt", "a" * 60, "--max-new-tokens", "3"], "exceed the model's context of 48"),
    ],
)
def test_generate_verb_reports_bad_input(folder, capsys, args, message):
    assert main(["generate", str(folder), *args]) == 2
    assert message in capsys.readouterr().err


def test_unknown_strategy_is_refused_by_the_parser(folder, capsys):
    with pytest.raises(SystemExit):
        main(["generate", str(folder), "--prompt", "x", "--strategy", "typical"])
    assert "invalid choice: 'typical'" in capsys.readouterr().err


def test_checkpoints_of_other_families_are_refused(tmp_path, capsys):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"family": "bert", "vocab_size": 10}))
    with pytest.raises(ValueError, match="holds a 'bert' model; generation needs a decoder-only"):
        load_checkpoint(bert)
    hf_vit = tmp_path / "vit"
    hf_vit.mkdir()
    (hf_vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert main(["generate", str(hf_vit), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "Hugging Face vit checkpoint; generation reads decoder-only and encoder-decoder ones" in err
    assert "t5" in err and "llama" in err
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_hugging_face_folder_loads_with_its_tokenizer(tmp_path, tokenizer):
    from glassformer.models.gpt.hf import save_pretrained

    model = tiny_gpt("llama")
    save_pretrained(model, tmp_path, tokenizer=tokenizer)
    ckpt = load_checkpoint(tmp_path)
    assert generate(ckpt.model, "abc", tokenizer=ckpt.tokenizer, max_new_tokens=6).tokens == generate(
        model, "abc", tokenizer=tokenizer, max_new_tokens=6
    ).tokens


def _session(tokenizer, **changes):
    config = GenerationConfig(max_new_tokens=8, **changes)
    return ChatSession(tiny_gpt("gpt2", max_seq_len=128), tokenizer, config=config)


def test_chat_loop_with_scripted_input(tokenizer):
    session = _session(tokenizer)
    script = "hello\n/temp 0.5\n/topk 5\n/topp 0.9\n/topp 2\n/topk many\n/wat\nhow are you\n/reset\nhi\n/quit\nnever read\n"
    out = io.StringIO()
    assert run_chat(session, io.StringIO(script), out) == 0
    text = out.getvalue()
    assert text.count("bot> ") == 3
    assert "(temperature = 0.5)" in text and "(top_k = 5)" in text and "(top_p = 0.9)" in text
    assert "not changed: top_p=2.0: must be in (0, 1]" in text
    assert "/topk needs a whole number" in text
    assert "unknown command /wat" in text
    assert "(conversation cleared)" in text
    assert session.config.strategy == "sample" and session.config.top_k == 5
    assert [m["role"] for m in session.messages] == ["user", "assistant"]  # only the turn after /reset
    assert session.messages[0]["content"] == "hi"


def test_chat_reply_is_the_streamed_text_and_history_fits_the_context(tokenizer):
    session = _session(tokenizer)  # context 128, replies of up to 8 tokens: 120 for the conversation
    pieces = list(session.reply("hello"))
    assert session.messages[-1] == {"role": "assistant", "content": "".join(pieces).strip()}
    for word in ("one", "two", "three", "four", "five", "six"):
        list(session.reply(word))
        prompt = session.render(session.messages[:-1])  # what the model saw for this reply
        assert len(tokenizer.encode(prompt)) <= 120
    # the oldest exchanges were dropped, the newest kept, in order
    users = [m["content"] for m in session.messages if m["role"] == "user"]
    assert 1 < len(users) < 7 and users == ["one", "two", "three", "four", "five", "six"][-len(users) :]
    out = io.StringIO()
    run_chat(session, io.StringIO("x" * 200 + "\n"), out)
    assert "does not fit the model's context of 128 tokens" in out.getvalue()


def test_chat_stops_at_end_of_turn_tokens_and_plain_transcript_turns(tokenizer):
    session = _session(tokenizer)
    assert tokenizer.eos_token_id in session.config.stop_token_ids
    assert "\nUser:" in session.config.stop_strings
    assert session.render([{"role": "user", "content": "hi"}]) == "User: hi\nAssistant:"
    templated = ChatSession(tiny_gpt("gpt2"), tokenizer, template="{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>",
                            config=GenerationConfig(max_new_tokens=4))  # fmt: skip
    assert templated.render([{"role": "user", "content": "hi"}]) == "<user>hi<assistant>"


def test_chat_verb_on_a_checkpoint_reads_stdin(folder, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/topk 3\nagain\n"))
    assert main(["chat", str(folder), "--temperature", "0", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"glassformer chat with {folder.name} (context 48 tokens)")
    assert out.count("bot> ") == 2 and "(top_k = 3)" in out


def test_chat_without_checkpoint_or_smollm2_says_what_to_do(monkeypatch, capsys):
    import glassformer.models.gpt.gguf as gguf

    def missing(**_):
        raise FileNotFoundError("SmolLM2 is not installed")

    monkeypatch.setattr(gguf, "load_smollm2", missing)
    assert main(["chat"]) == 2
    err = capsys.readouterr().err
    assert "the default chat model is not available (SmolLM2 is not installed)" in err
    assert "glassformer chat CHECKPOINT" in err


def test_a_training_runs_checkpoint_finds_the_runs_tokenizer(tmp_path) -> None:
    """`glassformer train` saves the tokenizer in out_dir; best/ and checkpoints/step-N use it."""
    from glassformer.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.from_text("abcdefgh ")
    model = tiny_gpt(vocab_size=tokenizer.vocab_size)
    tokenizer.save(tmp_path)
    model.save(tmp_path / "best")
    model.save(tmp_path / "checkpoints" / "step-00000004")
    for folder in (tmp_path / "best", tmp_path / "checkpoints" / "step-00000004"):
        checkpoint = load_checkpoint(folder)
        assert checkpoint.tokenizer.encode("abc") == tokenizer.encode("abc")
    lonely = tmp_path / "elsewhere" / "a" / "b" / "model"
    model.save(lonely)
    with pytest.raises(FileNotFoundError, match="no tokenizer beside it"):
        load_checkpoint(lonely)
