"""Like counts on Pathway, the peer overhead_bench runs for Python pipelines.

Usage: pathway_like_counts.py INPUT.jsonl OUTPUT.jsonl

Reads the like events overhead_bench wrote (one JSON object a line:
{"ts":<ms>,"user":<u64>,"post":<u64>,"kind":"like"|"unlike"}) in static mode (the whole file
in one commit: the batch question Kappa's bench asks), computes like counts as Kappa's
`like_counts` pipeline defines them, writes Pathway's output stream to OUTPUT.jsonl (rows
{"post","likes","time","diff"}; overhead_bench sums the diffs and checks the result against its
batch reference before it reports a time), and prints one JSON line on stdout:
{"pathway": <version>, "threads": <n>, "seconds": <wall>, "cpu_seconds": <cpu>}.

The definition (kappa_examples::like_counts): a like adds +1 to the pair (user, post), an
unlike -1; a user likes a post while the pair's net is positive (an unlike before any like makes
the net negative, so a later like only brings it back to zero); per post, the number of such
users, and only posts with at least one. Kappa's decoder rejects any other `kind` as a bad
record; such a line adds 0 here, so it changes nothing either.

Threads come from PATHWAY_THREADS (Pathway's engine reads it); overhead_bench sets it.
"""

import json
import os
import resource
import sys
import time


def cpu_seconds() -> float:
    # Pathway's engine runs its workers as threads of this process (RUSAGE_SELF counts every
    # thread); children in case a connector spawns any.
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: pathway_like_counts.py INPUT.jsonl OUTPUT.jsonl (overhead_bench runs it)")
    source, target = sys.argv[1], sys.argv[2]
    if not os.path.isfile(source):
        sys.exit(f"no input file {source}: overhead_bench writes it before running this script")

    import pathway as pw

    class LikeEvent(pw.Schema):
        ts: int
        user: int
        post: int
        kind: str

    likes = pw.io.jsonlines.read(source, schema=LikeEvent, mode="static")
    signed = likes.select(
        pw.this.user,
        pw.this.post,
        change=pw.if_else(
            pw.this.kind == "like", 1, pw.if_else(pw.this.kind == "unlike", -1, 0)
        ),
    )
    # Net count per (user, post) pair; the pair counts once while its net is positive.
    pairs = signed.groupby(pw.this.user, pw.this.post).reduce(
        pw.this.user, pw.this.post, net=pw.reducers.sum(pw.this.change)
    )
    liked = pairs.filter(pw.this.net > 0)
    counts = liked.groupby(pw.this.post).reduce(pw.this.post, likes=pw.reducers.count())
    pw.io.jsonlines.write(counts, target)

    # The time counted is the run: reading and parsing the file, the dataflow, writing the
    # output. Importing Pathway and building the graph (a second or two of Python) are not
    # counted, as Kappa's figure does not count starting the bench binary.
    cpu_before, started = cpu_seconds(), time.perf_counter()
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    threads = int(os.environ.get("PATHWAY_THREADS", "1"))
    print(
        json.dumps(
            {"pathway": pw.__version__, "threads": threads, "seconds": seconds, "cpu_seconds": cpu}
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
