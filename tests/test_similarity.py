import pytest

from sdft.evaluate.similarity import SentenceEncoder, bleu4, packaged_minilm_path, rouge_l


def test_rouge_l_by_hand():
    # pred = the cat sat on the mat, ref = the cat lay on a mat (6 tokens each).
    # LCS = "the cat on mat" = 4, so P = R = 4/6 and F = 2/3.
    assert rouge_l("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 / 3)
    # pred = cats chase mice (3), ref = cats really do chase mice (5); LCS = 3.
    # P = 3/3 = 1, R = 3/5 = 0.6, F = 2 * 1 * 0.6 / 1.6 = 0.75.
    assert rouge_l("cats chase mice", "cats really do chase mice") == pytest.approx(0.75)
    assert rouge_l("The Cat, sat!", "the cat sat") == pytest.approx(1.0)  # lowercased, punctuation dropped
    assert rouge_l("alpha beta", "gamma delta") == 0.0
    assert rouge_l("", "anything") == 0.0


def test_bleu4_by_hand():
    assert bleu4("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert bleu4("hello world", "hello world") == pytest.approx(100.0)  # effective order for short text
    assert bleu4("alpha beta gamma delta", "one two three four") == pytest.approx(0.0, abs=1e-6)
    # pred = "the cat" against a 6-token ref: with effective order only 1- and 2-grams count,
    # p1 = 2/2, p2 = 1/1, brevity penalty = exp(1 - 6/2) = exp(-2) = 0.135335 -> 13.5335.
    assert bleu4("the cat", "the cat sat on the mat") == pytest.approx(13.5335, abs=1e-3)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


def test_packaged_model_path():
    path = packaged_minilm_path()
    assert (path / "modules.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_cosine(encoder: SentenceEncoder):
    same = "The cat sat quietly on the warm windowsill."
    paraphrase = "A cat was sitting calmly on the sunny window ledge."
    unrelated = "Quarterly corporate tax returns are due at the end of March."
    sims = encoder.cosine([same, same, same], [same, paraphrase, unrelated])
    assert len(sims) == 3
    assert sims[0] == pytest.approx(1.0, abs=1e-4)
    assert sims[1] > 0.6
    assert sims[2] < 0.3
    assert sims[1] - sims[2] > 0.4
    # Order follows the inputs, and duplicates are handled.
    assert encoder.cosine([unrelated, same], [same, same]) == pytest.approx([sims[2], 1.0], abs=1e-4)


def test_cosine_shapes(encoder: SentenceEncoder):
    assert encoder.cosine([], []) == []
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(ValueError):
        encoder.cosine(["a"], ["a", "b"])
