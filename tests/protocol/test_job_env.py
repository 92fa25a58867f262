"""The job-environment rule at its boundaries: what Linux lets a body start with."""

from __future__ import annotations

from caroni.protocol.job_env import MAX_ENTRY_BYTES, MAX_TOTAL_BYTES, env_problem

# "CARONI_ENV_x=" and the NUL around a value of input "x".
OVERHEAD = len("CARONI_ENV_x=") + 1


def test_one_input_fits_up_to_the_kernel_limit_for_one_variable() -> None:
    assert env_problem({"x": "a" * (MAX_ENTRY_BYTES - OVERHEAD)}) == ""
    problem = env_problem({"x": "a" * (MAX_ENTRY_BYTES - OVERHEAD + 1)})
    assert problem == (
        f"input 'x' is too large for the environment ({MAX_ENTRY_BYTES + 1} bytes as "
        f"CARONI_ENV_x; Linux allows {MAX_ENTRY_BYTES} per variable)"
    )


def test_the_size_is_counted_in_encoded_bytes_not_characters() -> None:
    # "é" is two bytes in UTF-8: half as many characters reach the same limit.
    fits = "é" * ((MAX_ENTRY_BYTES - OVERHEAD) // 2)
    assert env_problem({"x": fits}) == ""
    assert "too large" in env_problem({"x": fits + "é"})


def test_inputs_that_fit_one_by_one_may_not_fit_together() -> None:
    names = [f"i{n}" for n in range(9)]  # each entry: "CARONI_ENV_iN=" + value + NUL
    per_entry = len("CARONI_ENV_i0=") + 1
    value = "a" * (MAX_TOTAL_BYTES // len(names) - per_entry)
    exact = {name: value for name in names[:-1]}
    exact[names[-1]] = value + "a" * (MAX_TOTAL_BYTES % len(names))
    assert env_problem(exact) == ""  # exactly the total
    exact[names[-1]] += "a"
    problem = env_problem(exact)
    assert problem.startswith("inputs 'i0', 'i1', ")
    assert f"too large for the environment together ({MAX_TOTAL_BYTES + 1} bytes" in problem


def test_a_nul_cannot_be_in_an_environment() -> None:
    assert "NUL" in env_problem({"x": "a\0b"})


def test_no_inputs_and_empty_values_fit() -> None:
    assert env_problem({}) == ""
    assert env_problem({"x": "", "y": ""}) == ""
