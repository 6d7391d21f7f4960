"""The node's CPU board and a runner's share of the cores (herd.worker.cpu_share)."""

from __future__ import annotations

import pathlib

from herd.worker.cpu_share import SLOTS, CpuBoard, CpuShare, fair_share


def test_fair_share_splits_the_cores_and_gives_the_remainder_to_the_lowest_slots() -> None:
    assert fair_share(2, [0, 1], 0, cap=2) == 1
    assert fair_share(2, [0, 1], 1, cap=2) == 1
    assert [fair_share(8, [1, 4, 9], s, cap=8) for s in (1, 4, 9)] == [3, 3, 2]
    assert fair_share(16, [0, 1], 0, cap=4) == 4  # never above what the runner was given
    assert fair_share(2, [0, 1, 2, 3], 3, cap=2) == 1  # never below one thread
    assert fair_share(4, [2], 5, cap=4) == 2  # the caller counts itself even when unmarked


def test_runners_on_one_board_split_the_cores_while_both_work(tmp_path: pathlib.Path) -> None:
    board = CpuBoard(str(tmp_path / "board"))
    a_slot, b_slot = board.take(), board.take()
    a = CpuShare(board.path, a_slot, cores=4, cap=4)
    b = CpuShare(board.path, b_slot, cores=4, cap=4)
    try:
        assert a.update(True) == 4  # alone
        assert board.threads() == {a_slot: 4}
        assert b.update(True) == 2
        assert a.update(True) == 2
        assert board.threads() == {a_slot: 2, b_slot: 2}
        assert b.update(False) == 4
        assert board.threads() == {a_slot: 2}
        assert a.update(True) == 4  # the other went idle: all the cores again
    finally:
        a.close()
        b.close()
        board.close()
    assert not (tmp_path / "board").exists()


def test_a_slot_given_back_loses_its_mark_and_is_handed_out_again(tmp_path: pathlib.Path) -> None:
    board = CpuBoard(str(tmp_path / "board"))
    slot = board.take()
    crashed = CpuShare(board.path, slot, cores=2, cap=2)
    crashed.update(True)  # and then the process dies without closing
    other = CpuShare(board.path, board.take(), cores=2, cap=2)
    assert other.update(True) == 1
    board.give_back(slot)
    assert other.update(True) == 2
    assert board.take() == slot
    board.close()


def test_a_full_board_hands_out_no_slot(tmp_path: pathlib.Path) -> None:
    board = CpuBoard(str(tmp_path / "board"))
    assert sorted(board.take() for _ in range(SLOTS)) == list(range(SLOTS))
    assert board.take() == -1
    board.give_back(-1)  # a runner started without a slot
    assert board.take() == -1
    board.close()
