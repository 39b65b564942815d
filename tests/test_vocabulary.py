import pytest

import videopoet
from videopoet.core.declarations import AudioTokenizerSpec, TargetSpec, TaskSpec
from videopoet.core.errors import VocabularyError
from videopoet.core.plugins import load_registry
from videopoet.core.vocabulary import RESERVED, SPECIAL_TOKENS, Vocabulary


def test_reference_offsets_and_size(vocab):
    assert vocab.codebook("visual").start == 256
    assert vocab.codebook("visual").size == 262_144
    assert vocab.codebook("audio", 0).start == 262_400
    assert vocab.size == 266_496


def test_audio_levels_have_disjoint_ranges(vocab):
    books = vocab.codebooks_of("audio")
    assert [(b.start, b.stop) for b in books] == [
        (262_400, 263_424),
        (263_424, 264_448),
        (264_448, 265_472),
        (265_472, 266_496),
    ]


def test_table1_tokens_and_task_tokens_fit_in_reserved_range(vocab, registry):
    for name in SPECIAL_TOKENS:
        assert 0 <= vocab.id(name) < RESERVED
    assert vocab.id("<pad>") == 0
    shared = {registry.task(n).token_name for n in ("t2v", "i2v", "uncond")}
    assert shared == {"<task_video>"}
    assert len(set(vocab.tokens.values())) == len(vocab.tokens)


def test_json_round_trip_keeps_every_id(vocab, registry):
    table = vocab.to_dict()
    again = Vocabulary.from_registry(registry, base=table)
    assert again.tokens == vocab.tokens
    assert again.codebooks == vocab.codebooks


def test_saved_table_conflicting_with_installed_tokenizer_is_an_error(vocab, registry):
    table = vocab.to_dict()
    table["codebooks"][0]["size"] = 1024
    with pytest.raises(VocabularyError, match="conflicts with the installed tokenizers"):
        Vocabulary.from_registry(registry, base=table)


def test_saved_table_with_two_names_on_one_id_is_an_error(vocab, registry):
    table = vocab.to_dict()
    table["tokens"]["<eos>"] = table["tokens"]["<bos>"]
    with pytest.raises(VocabularyError, match="share id"):
        Vocabulary.from_registry(registry, base=table)


def test_new_task_takes_a_free_id_and_moves_nothing(vocab, registry):
    table = vocab.to_dict()
    new = TaskSpec(name="zz", task_token="aaa_new", target=TargetSpec(visual="video"))
    grown = Vocabulary([*registry.tasks.values(), new], vocab.visual, vocab.audio, base=table)
    assert {k: grown.tokens[k] for k in vocab.tokens} == vocab.tokens
    assert grown.id("<task_aaa_new>") not in vocab.tokens.values()


def test_installing_a_plugin_never_moves_builtin_ids(vocab, registry):
    class Plugin:
        @videopoet.hookimpl
        def register_tasks(self):
            return [TaskSpec(name="aaa", task_token="aaa", target=TargetSpec(visual="video"))]

    grown = Vocabulary.from_registry(load_registry(extra_plugins=[("aaa", Plugin())]))
    builtin = [*SPECIAL_TOKENS] + [
        spec.token_name
        for name, spec in registry.tasks.items()
        if registry.owners[("tasks", name)].distribution == "videopoet"
    ]
    assert {k: grown.tokens[k] for k in builtin} == {k: vocab.tokens[k] for k in builtin}
    assert grown.id("<task_aaa>") > max(vocab.tokens[k] for k in builtin)


def test_running_out_of_reserved_ids_is_a_clear_error(vocab):
    tasks = [
        TaskSpec(name=f"t{i}", task_token=f"t{i}", target=TargetSpec(visual="video"))
        for i in range(RESERVED)
    ]
    with pytest.raises(VocabularyError, match="reserved ids are used up"):
        Vocabulary(tasks, vocab.visual, vocab.audio)


def test_sizes_come_from_the_tokenizers(tiny_vocab):
    assert tiny_vocab.codebook("visual").size == 64
    assert tiny_vocab.size == 256 + 64 + 2 * 16


def test_name_of_ids(vocab):
    assert vocab.name(vocab.id("<bos>")) == "<bos>"
    assert vocab.name(256) == "visual[0]:0"
    assert vocab.name(263_424) == "audio[1]:0"
    with pytest.raises(VocabularyError, match="outside the vocabulary"):
        vocab.name(vocab.size)


def test_audio_at_24khz_changes_the_counts():
    spec = AudioTokenizerSpec(name="encodec24k", sample_rate=24_000, frame_rate=75.0)
    assert spec.latent_frames(2.125) == 159
    assert spec.token_count(2.125) == 636
