"""A counter script's command as one RESP buffer (``script_calls.pack_command``): Redis reads back
exactly the words sent, ASCII or not."""

from __future__ import annotations

import hiredis
from hypothesis import given
from hypothesis import strategies as st

from costwarden.counters.script_calls import pack_command

WORDS = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), max_size=30)


@given(WORDS)
def test_the_server_reads_back_the_words_sent(words: list[str]) -> None:
    reader = hiredis.Reader()  # parses a request's array of bulk strings as a reply's
    reader.feed(pack_command(words))
    assert reader.gets() == [word.encode() for word in words]
    assert reader.gets() is False  # nothing left over
