from conftest import kjv, needs_kjv
from nino_optim.bench.text import split_verses


def test_every_twentieth_verse_is_held_out_without_its_reference():
    lines = [f"Ge1:{i + 1} verse number {i}" for i in range(45)] + [""]
    train, val = split_verses(lines)
    assert val == "verse number 19\nverse number 39\n"
    assert train.count("\n") == 43 and "Ge1:" not in train and "verse number 19\n" not in train


@needs_kjv
def test_the_king_james_bible_loads_offline_as_bytes():
    text = kjv()
    assert text.name == "kjv" and text.train.dtype.is_floating_point is False
    assert 3_900_000 < len(text.train) < 4_300_000 and 190_000 < len(text.val) < 230_000
    start = bytes(text.train[:60].tolist()).decode()
    assert start.startswith("In the beginning God created the heaven and the earth.")
