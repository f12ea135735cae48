"""The continuous-batching engine model: one loop of admit, step, finish.

Each iteration: take arrivals up to `now` into the `FairQueue`; admit from
its head while the batch has room and the head's KV fits (stop at the first
head that does not fit, as VTC prescribes); run one step (decodes first,
then chunked prefill within the token budget); advance time by the profile's
step-time model; retire finished requests. When nothing runs and nothing
waits, time jumps to the next arrival. Calls of applications arrive when
their parents finish (`sim/arrivals.py`); the policy hears of each
application (`on_app_arrival`) just before its first calls.

Usage is billed lazily (see `UsageLedger`). Decisions stay exact because
charges only ever raise counters: before trusting a pick, the picked
tenant's own pending usage is billed and the pick repeated; every other
tenant's true counter can only be higher than what the policy sees. All
usage is billed before arrivals (the counter lift reads other tenants'
counters) and at finish. Cost functions must be non-decreasing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scheduler_core.apps import Application
from scheduler_core.fair_queue import FairQueue
from scheduler_core.job import Job
from scheduler_core.policy import Admission, FairPolicy
from scheduler_core.sim.arrivals import AppTracker, ArrivalQueue
from scheduler_core.sim.batch import Seq, UsageLedger
from scheduler_core.sim.kv import BlockPool, projected_peak_fits
from scheduler_core.sim.profiles import EngineProfile, ReservePolicy
from scheduler_core.sim.records import RequestRecord, RequestStatus, ServiceSample, SimResult
from scheduler_core.sim.waiting import WaitingRoom, held_tokens, remaining_tokens


def _shape(seq: Seq) -> tuple[int, int]:
    return remaining_tokens(seq), held_tokens(seq)


class Simulator:
    """Runs one workload through one policy on one engine profile (single use)."""

    def __init__(
        self, profile: EngineProfile, policy: FairPolicy, *, record_service: bool = False
    ) -> None:
        self.profile = profile
        self.policy = policy
        self.queue = FairQueue(policy)
        self.pool = BlockPool(profile.num_blocks)
        self.now = 0.0
        self._running: list[Seq] = []  # admission order: the last is preempted first
        self._decoding: list[Seq] = []
        self._prefilling: list[Seq] = []
        self._waiting = WaitingRoom()
        self._ledger = UsageLedger(policy)
        self._records: list[RequestRecord] = []
        self._log: list[ServiceSample] | None = [] if record_service else None
        self._num_kv_tokens = 0
        self._num_steps = 0
        self._num_preemptions = 0
        self._admit_interval = profile.admit_interval_steps
        self._last_admit_step = 0
        self._started = False
        self._arrivals = ArrivalQueue()
        self._apps = AppTracker(())

    def run(self, jobs: Iterable[Job] = (), apps: Sequence[Application] = ()) -> SimResult:
        """Simulate `jobs` (single requests) and `apps` (applications, whose
        calls arrive as their parents finish) until everything has finished."""
        if self._started:
            raise ValueError("a Simulator runs once; build a new one (and a new policy)")
        self._started = True
        self._apps = AppTracker(apps)
        jobs = list(jobs)
        validate_jobs([*jobs, *self._apps.all_calls()], self.profile)  # every call, ids unique
        self._arrivals = ArrivalQueue([*jobs, *self._apps.roots()])
        while self._arrivals or self.queue or self._running:
            if not self._running and not self.queue:
                self.now = max(self.now, self._arrivals.next_time())
            self._receive()
            self._admit()
            if self._running:
                self._step()
            elif self.queue:
                raise RuntimeError("simulator stalled: requests wait but none can be admitted")
        log = [] if self._log is None else self._log
        return SimResult(self._records, self.now, self._num_steps, self._num_preemptions, log)

    # -- arrivals and admission ------------------------------------------------

    def _receive(self) -> None:
        due = self._arrivals.pop_due(self.now)
        if due:
            self._ledger.settle_all(self._num_steps)
        for job in due:
            info = self._apps.announce(job)
            if info is not None:
                self.policy.on_app_arrival(info, info.arrival_s)
            record = RequestRecord(
                job.request_id,
                job.tenant,
                job.arrival_s,
                job.prompt_tokens,
                job.target_output_tokens,
                app=job.app,
            )
            self._records.append(record)
            if self.queue.push(job, job.arrival_s) is Admission.REJECTED:
                record.status = RequestStatus.REJECTED
                continue
            seq = Seq(job, record, job.target_output_tokens, prefill_left=job.prompt_tokens)
            self._waiting.add(seq, self._need(seq))

    def _admit(self) -> None:
        max_seqs = self.profile.max_num_seqs
        if not self.queue or len(self._running) >= max_seqs:
            return
        if self._running and self._num_steps - self._last_admit_step < self._admit_interval:
            return
        budget = self._budget_left()
        # Exact shortcut: when even the smallest waiting request cannot fit,
        # whichever head the policy picks cannot fit either.
        if budget <= 0 or self.pool.num_free < self._waiting.min_need():
            return
        if not self._peak_fits(self._waiting.min_shape()):
            return
        while self.queue and len(self._running) < max_seqs and budget > 0:
            job = self._settled_peek()
            if job is None:
                break
            seq = self._waiting.get(job.request_id)
            need = self._need(seq)
            if not (self.pool.can_allocate(need) and self._peak_fits(_shape(seq))):
                break  # VTC's rule: stop refilling rather than skip to a later tenant
            self.queue.pop()
            self._start(seq, need)
            budget -= seq.prefill_left
            self._last_admit_step = self._num_steps

    def _settled_peek(self) -> Job | None:
        """The policy's pick, after billing the picked tenant's pending usage."""
        while True:
            job = self.queue.peek()
            if job is None or self._ledger.is_settled(job.tenant, self._num_steps):
                return job
            self._ledger.settle(job.tenant, self._num_steps)

    def _peak_fits(self, candidate: tuple[int, int]) -> bool:
        """PROJECTED reserve: does the batch plus a `(remaining, held)`
        candidate stay within the pool at its projected peak? The peak is
        monotone in both, so a fit of the smallest shape bounds every head."""
        if self.profile.reserve is not ReservePolicy.PROJECTED:
            return True
        batch = [_shape(s) for s in self._running]
        batch.append(candidate)
        # One block of slack per request: allocation is block-granular.
        capacity = (self.pool.num_blocks - len(batch)) * self.profile.block_size
        return projected_peak_fits(batch, capacity)

    def _start(self, seq: Seq, num_blocks: int) -> None:
        self._waiting.take(seq.job.request_id)
        self.pool.allocate(num_blocks)
        seq.num_blocks = num_blocks
        self.policy.on_admit(seq.job, self.now)
        if seq.record.admitted_s is None:
            seq.record.admitted_s = self.now
        seq.record.status = RequestStatus.RUNNING
        self._running.append(seq)
        self._prefilling.append(seq)
        self._ledger.join(seq, self._num_steps)

    def _budget_left(self) -> int:
        prefill = sum(seq.prefill_left for seq in self._prefilling)
        return self.profile.max_num_batched_tokens - len(self._decoding) - prefill

    def _need(self, seq: Seq) -> int:
        if self.profile.reserve is ReservePolicy.WORST_CASE:
            return self.profile.blocks_for(seq.job.prompt_tokens + seq.job.max_tokens)
        return self.profile.blocks_for(seq.job.prompt_tokens + seq.num_output + 1)

    # -- one engine step ------------------------------------------------------------

    def _step(self) -> None:
        profile = self.profile
        if profile.reserve is not ReservePolicy.WORST_CASE:
            self._grow_blocks()
        decoding = self._decoding
        num_prefill, num_prefill_seqs, completed = self._prefill_chunks()
        self._num_kv_tokens += num_prefill
        num_seqs = len(decoding) + num_prefill_seqs
        self.now += profile.step_time(num_prefill, num_seqs, self._num_kv_tokens)
        self._num_steps += 1
        finished = []
        for seq in decoding:  # the hot loop: keep it to an increment and a compare
            seq.num_output += 1
            if seq.num_output >= seq.target:
                finished.append(seq)
        self._num_kv_tokens += len(decoding)
        for seq in completed:
            self._start_decoding(seq, finished)
        for seq in finished:
            self._finish(seq)
        if self._log is not None:
            self._sample(self._log)

    def _prefill_chunks(self) -> tuple[int, int, list[Seq]]:
        """Spend what the decodes leave of the token budget on prefills, in order."""
        budget = self.profile.max_num_batched_tokens - len(self._decoding)
        num_prefill, num_seqs, completed = 0, 0, []
        for seq in self._prefilling:
            if budget <= 0:
                break
            chunk = min(seq.prefill_left, budget)
            seq.prefill_left -= chunk
            seq.pending_in += chunk
            budget -= chunk
            num_prefill += chunk
            num_seqs += 1
            if seq.prefill_left == 0:
                completed.append(seq)
        return num_prefill, num_seqs, completed

    def _start_decoding(self, seq: Seq, finished: list[Seq]) -> None:
        # The step that completes a prefill samples the next token.
        self._prefilling.remove(seq)
        seq.num_output += 1
        self._num_kv_tokens += 1
        if seq.record.first_token_s is None:
            seq.record.first_token_s = self.now
        if seq.num_output >= seq.target:
            finished.append(seq)
        else:
            self._decoding.append(seq)

    def _finish(self, seq: Seq) -> None:
        self._leave_batch(seq)
        record = seq.record
        record.status = RequestStatus.FINISHED
        record.finish_s = self.now
        record.output_tokens = seq.num_output
        self.policy.on_finish(seq.job, self.now)
        for released in self._apps.finished(seq.job, self.now):
            self._arrivals.push(released)

    def _leave_batch(self, seq: Seq) -> None:
        self._ledger.leave(seq, self._num_steps)
        self.pool.free(seq.num_blocks)
        seq.num_blocks = 0
        self._num_kv_tokens -= seq.num_resident
        self._running.remove(seq)
        if seq in self._decoding:
            self._decoding.remove(seq)
        elif seq in self._prefilling:
            self._prefilling.remove(seq)

    # -- on-demand KV growth and preemption ------------------------------------------------

    def _grow_blocks(self) -> None:
        block_size = self.profile.block_size
        for seq in list(self._decoding):
            if seq.job.prompt_tokens + seq.num_output + 1 <= seq.num_blocks * block_size:
                continue
            while not self.pool.can_allocate(1) and seq.num_blocks:
                self._preempt(self._victim())
            if seq.num_blocks:
                self._ledger.settle_kv(seq, self._num_steps)
                self.pool.allocate(1)
                seq.num_blocks += 1

    def _victim(self) -> Seq:
        """The running request to preempt: the policy's last in line, else the
        latest admitted (vLLM's rule)."""
        running = self._running
        ranks = [self.policy.preemption_rank(seq.job) for seq in running]
        if any(rank is None for rank in ranks):
            return running[-1]
        # Ties go to the later admission, as in vLLM.
        last = max(range(len(running)), key=lambda i: (ranks[i], i))
        return running[last]

    def _preempt(self, seq: Seq) -> None:
        """Free a running request's KV and queue it again, to be recomputed."""
        self._leave_batch(seq)
        seq.prefill_left = seq.job.prompt_tokens + seq.num_output
        seq.record.status = RequestStatus.WAITING
        seq.record.num_preemptions += 1
        self._num_preemptions += 1
        self._waiting.add(seq, self._need(seq))
        self.queue.prepend(seq.job)

    def _sample(self, log: list[ServiceSample]) -> None:
        ledger = self._ledger
        ledger.settle_all(self._num_steps)
        backlogged = frozenset(self.queue.waiting_tenants())
        log.append(
            ServiceSample(self.now, dict(ledger.served_in), dict(ledger.served_out), backlogged)
        )


def validate_jobs(jobs: Iterable[Job], profile: EngineProfile) -> list[Job]:
    """`jobs` in arrival order; ValueError for duplicate ids or a request whose
    prompt plus max_tokens could never fit in the profile's KV pool."""
    arrivals = sorted(jobs, key=lambda job: job.arrival_s)
    if len({job.request_id for job in arrivals}) != len(arrivals):
        raise ValueError("request ids must be unique")
    for job in arrivals:
        if profile.blocks_for(job.prompt_tokens + job.max_tokens) > profile.num_blocks:
            raise ValueError(
                f"request {job.request_id} needs more KV than profile "
                f"{profile.name} has ({profile.num_kv_tokens} tokens)"
            )
    return arrivals


def simulate(
    jobs: Iterable[Job],
    profile: EngineProfile,
    policy: FairPolicy,
    *,
    record_service: bool = False,
    apps: Sequence[Application] = (),
) -> SimResult:
    """Run `jobs` (and the calls of `apps`) through a fresh simulator."""
    return Simulator(profile, policy, record_service=record_service).run(jobs, apps)
