import pytest

from tests.support.processes import PrivatePostgres


@pytest.fixture
def postgres():
    """A PostgreSQL cluster of the test's own, to crash or fill without touching the shared one."""
    pg = PrivatePostgres().init()
    try:
        yield pg
    finally:
        pg.destroy()
