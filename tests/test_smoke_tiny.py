"""End-to-end on the tiny model and toy data through the CLI: apply, cache, sql, predict."""

import json


def test_apply_then_cached_then_sql(write_spec, cli):
    spec = write_spec(method='name = "full"', train="epochs = 6\nlearning_rate = 1e-3")
    code, out, err = cli("apply", str(spec))
    assert code == 0, err
    assert "1 completed" in err
    code, out, err = cli("apply", str(spec))
    assert code == 0 and "1 cached" in err
    code, out, err = cli("sql", "SELECT status, method FROM runs", "--format", "json")
    assert json.loads(out) == [{"status": "completed", "method": "full"}]
    code, out, _ = cli("sql", "SELECT value FROM metrics WHERE final AND split='validation' AND name='accuracy'", "-f", "json")
    assert json.loads(out)[0]["value"] > 0.8
