"""The spinner draws on a terminal only, and leaves nothing behind."""

import io

from switchyard_client.progress import Spinner


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_it_draws_at_once_and_erases_when_stopped():
    out = Terminal()
    spinner = Spinner(out, "waiting for the first token")
    spinner.start()
    drawn = out.getvalue()
    spinner.stop()
    assert drawn.startswith("\r\x1b[K") and drawn.endswith(" waiting for the first token")
    erased = out.getvalue()
    assert erased.endswith("\r\x1b[K")  # the line is clean for the first token
    spinner.stop()  # a second stop writes nothing more
    assert out.getvalue() == erased


def test_off_a_terminal_it_draws_nothing():
    out = io.StringIO()
    with Spinner(out, "waiting"):
        pass
    assert out.getvalue() == ""
