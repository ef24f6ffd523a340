"""`bench/worker_profile.py` counts py-spy's collapsed stacks into the parts of a request: the
write path's parts win over the state read inside them, waiting threads count for nothing."""

from bench.worker_profile import HTTP, shares

WORKER = (
    'process 11:"python rtrec serve --workers 2";process 12:"python -c from multiprocessing.spawn import spawn_main"'
)
MAIN = f"{WORKER};thread (12): MainThread;Server.run (uvicorn/server.py);Runner.run (asyncio/runners.py)"
WRITER = f"{WORKER};thread (13): event-writer_0;Thread.run (threading.py);_worker (concurrent/futures/thread.py)"
# from a profile of saturated GETs and POSTs (frames shortened)
STACKS = {
    f"{MAIN};RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py)": 30,
    f"{MAIN};Batcher._run (serving/batcher.py);Recommender.recommend_batch (model/inference.py)": 40,
    f"{MAIN};StateReader._flush (serving/state_reader.py);read_users (serving/forgetting.py);"
    "UserStateTable.read_many (rtrec/online_state.py);SqliteOnlineStore.online_read (feast/infra/sqlite.py)": 12,
    f"{MAIN};StateReader._flush (serving/state_reader.py);read_users (serving/forgetting.py);"
    "_unless_forgotten (serving/forgetting.py)": 4,
    f"{MAIN};post_events (serving/routes/events.py);Event.to_log (serving/schemas.py)": 5,
    f"{WRITER};EventWriter._write (serving/event_writer.py);FeedbackLog.append (serving/feedback_log.py);"
    "append_durably (rtrec/durable.py)": 24,
    f"{WRITER};EventWriter._push (serving/event_writer.py);push_events (rtrec/online_state.py);"
    "UserStateTable.read_many (rtrec/online_state.py)": 16,
    f"{WRITER};Semaphore.release (threading.py)": 1,
    f"{WORKER};thread (14): Thread-2 (watch);watch (serving/model_holder.py);Event.wait (threading.py);"
    "Condition.wait (threading.py)": 500,
    f"{WORKER};thread (15): Thread-1 (always_pong);Process.pong (uvicorn/supervisors/multiprocess.py);"
    "Connection._recv (multiprocessing/connection.py)": 500,
}


def test_samples_are_counted_per_part_and_waiting_threads_not_at_all(tmp_path):
    collapsed = tmp_path / "post.txt"
    collapsed.write_text("".join(f"{stack} {count}\n" for stack, count in STACKS.items()))
    assert shares(collapsed) == {
        HTTP: 30,
        "model (scores, blends, top-k)": 40,
        "user state read": 16,
        "route handlers (validation, filtering, responses)": 5,
        "feedback log (durable append, forget checks)": 24,
        "online update (locks, read, write)": 16,
        "other threads": 1,
    }
