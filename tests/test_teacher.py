"""Teacher runs: a transform's `teacher = "<spec>.toml"` trains that run first; its per-example scores
are stored once and reused by every run that selects from them."""

import json


def test_difficulty_students_share_one_teacher(write_spec, cli, tmp_path):
    teacher = write_spec(name="teacher", method='name = "full"', train="max_steps = 4")
    student = write_spec(
        name="student",
        train="max_steps = 2",
        extra='[sweep]\n"data.transforms.0.strategy" = ["easy", "hard"]',
    )
    text = student.read_text().replace(
        "[method]",
        f'[[data.transforms]]\nname = "difficulty"\nteacher = "{teacher.name}"\nn = 40\nstrategy = "easy"\n\n[method]',
    )
    student.write_text(text)

    code, _, err = cli("apply", str(student))
    assert code == 0, err
    assert "[required first]" in err and "2 completed" in err

    def q(sql):
        code, out, err = cli("sql", sql, "-f", "json")
        assert code == 0, err
        return json.loads(out)

    runs = q("SELECT experiment, status, count(*) AS n FROM runs GROUP BY ALL ORDER BY experiment")
    assert runs == [
        {"experiment": "student", "status": "completed", "n": 2},
        {"experiment": "teacher", "status": "completed", "n": 1},
    ]
    # scores of the 240 training examples were computed once, though two students used them
    assert q("SELECT count(*) AS n, count(DISTINCT example_id) AS ids FROM example_scores") == [{"n": 240, "ids": 240}]
    # the student's config names the teacher by run id, so a changed teacher changes the student's id
    teacher_id = q("SELECT run_id FROM runs WHERE experiment = 'teacher'")[0]["run_id"]
    configs = q("SELECT config->'data'->'transforms'->0->>'teacher' AS t FROM runs WHERE experiment = 'student'")
    assert {c["t"] for c in configs} == {teacher_id}
    # easy picks lower teacher losses than hard
    means = q("""
        SELECT r.sweep->>'$."data.transforms.0.strategy"' AS strategy, count(*) AS n, avg(s.loss) AS loss
        FROM train_examples t JOIN runs r USING (run_id) JOIN example_scores s USING (example_id)
        WHERE r.experiment = 'student'
        GROUP BY strategy ORDER BY strategy
    """)
    assert [m["strategy"] for m in means] == ["easy", "hard"] and all(m["n"] == 40 for m in means)
    assert means[0]["loss"] < means[1]["loss"]

    code, _, err = cli("apply", str(student))  # everything cached, the teacher included
    assert code == 0 and "2 cached" in err


def test_failed_teacher_fails_students_with_reason(write_spec, cli):
    teacher = write_spec(name="badteacher", train='max_steps = 2\ndevice = "cuda"')  # no CUDA here: the teacher fails
    student = write_spec(name="student2", train="max_steps = 2")
    student.write_text(
        student.read_text().replace(
            "[method]",
            f'[[data.transforms]]\nname = "difficulty"\nteacher = "{teacher.name}"\nn = 10\nstrategy = "easy"\n\n[method]',
        )
    )
    code, _, err = cli("apply", str(student))
    assert code == 1, err
    assert "required run" in err and "failed" in err


def test_every_seed_of_a_student_depends_on_the_teacher(write_spec, cli, registry):
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    write_spec(name="teacher", train="epochs = 1")
    spec = write_spec(
        train="epochs = 1",
        extra='[[data.transforms]]\nname = "difficulty"\nteacher = "teacher.toml"\nn = 40\nstrategy = "easy"\n',
    )
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1, 2]"))
    planned = plan_runs(load_spec(spec, registry=registry), registry)
    assert len(planned) == 3
    teachers = {p.config["data"]["transforms"][0]["teacher"] for p in planned}
    assert len(teachers) == 1
    assert all([d.run_id for d in p.dependencies] == list(teachers) for p in planned)


def test_a_missing_teacher_spec_names_the_key_that_points_to_it(write_spec, cli):
    spec = write_spec(
        extra='[[data.transforms]]\nname = "difficulty"\nteacher = "nope.toml"\nn = 10\nstrategy = "easy"\n'
    )
    line = spec.read_text().splitlines().index('teacher = "nope.toml"') + 1
    code, _, err = cli("plan", str(spec))
    assert code == 2
    assert err.startswith(
        f"error: {spec}:{line}: data.transforms.0.teacher: no spec file 'nope.toml' (looked for {spec.parent / 'nope.toml'};"
    )
