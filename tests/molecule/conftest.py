"""Wall times of the molecule scenarios, printed at the end of the session."""

from __future__ import annotations

import pytest

WALL_TIMES = pytest.StashKey[dict[str, tuple[float, str]]]()


@pytest.fixture
def molecule_wall_times(request: pytest.FixtureRequest) -> dict[str, tuple[float, str]]:
    """role -> (seconds, outcome), shared by the session and printed at its end."""
    return request.config.stash.setdefault(WALL_TIMES, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    times = config.stash.get(WALL_TIMES, {})
    if not times:
        return
    terminalreporter.section("molecule scenarios: wall time (holding the heavy-suite lock)")
    for role, (seconds, outcome) in sorted(times.items()):
        terminalreporter.write_line(f"  {role:<20} {seconds:7.1f} s  {outcome}")
    total = sum(seconds for seconds, _ in times.values())
    terminalreporter.write_line(f"  {'total':<20} {total:7.1f} s")
