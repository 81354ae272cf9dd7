import { expect } from 'chai';
import { jobDecider, jobStatusOf, type JobEvent } from '../../domain/jobs.ts';
import { deciderSpec } from '../support/deciderSpec.ts';

const jobId = 'a1111111-1111-4111-8111-111111111111';
const [e1, e2, e3] = ['e1111111-1111-4111-8111-111111111111', 'e2222222-2222-4222-8222-222222222222', 'e3333333-3333-4333-8333-333333333333'];
const created: JobEvent = { type: 'JobCreated', data: {
  jobId, name: 'j', command: 'true', project: 'default', scheduleAt: null, timeoutSeconds: 60, maxParallel: null, createdBy: null,
  templateId: null, params: null, queuedBehind: null,
  targets: [e1, e2, e3].map((executionId, i) => ({ executionId, systemId: `5${i}111111-1111-4111-8111-111111111111`, systemName: `h${i}` })),
} };
const started = (executionId: string): JobEvent => ({ type: 'ExecutionStarted', data: { jobId, executionId, startedAt: '2026-11-23T10:00:00.000Z', runner: 'r' } });
const finished = (executionId: string, status: 'completed' | 'failed' = 'completed') => ({
  jobId, executionId, status, exitCode: status === 'completed' ? 0 : 1, errorMessage: null, finishedAt: '2026-11-23T10:00:01.000Z',
  durationSeconds: 1, stdout: { bytes: 0, truncated: false }, stderr: { bytes: 0, truncated: false },
});
const given = deciderSpec(jobDecider);

describe('jobs decider', () => {
  it('records several starts and ends in one decision, leaving out what no longer applies', () =>
    given([created, started(e1), { type: 'ExecutionFinished', data: finished(e1) }]).when({ type: 'RecordExecutions', data: {
      jobId, starts: [started(e1).data as never, started(e2).data as never], finishes: [finished(e1, 'failed'), finished(e2)],
    } }).then([started(e2), { type: 'ExecutionFinished', data: finished(e2) }]));
  it('starts nothing once the job is cancelled; cancel ends the pending executions at once', () => {
    const cancelled: JobEvent = { type: 'JobCancelled', data: { jobId, at: '2026-11-23T10:00:02.000Z' } };
    given([created, started(e1), cancelled]).when({ type: 'RecordExecutions', data: { jobId, starts: [started(e2).data as never], finishes: [] } }).then([]);
    const decided = jobDecider.decide({ type: 'CancelJob', data: { jobId, at: '2026-11-23T10:00:02.000Z' } },
      [created, started(e1)].reduce(jobDecider.evolve, jobDecider.initialState()));
    expect(decided.map((e) => e.type)).to.deep.equal(['JobCancelled', 'ExecutionFinished', 'ExecutionFinished']);
    given([created, cancelled]).when({ type: 'CancelJob', data: { jobId, at: 'x' } }).thenThrows('JOB_FINISHED');
  });
  it('refuses a job without targets, and a start after cancel', () => {
    given([]).when({ type: 'CreateJob', data: { ...(created.data as never as object), targets: [] } as never }).thenThrows('NO_TARGETS');
    given([created, { type: 'JobCancelled', data: { jobId, at: 'x' } }]).when({ type: 'StartExecution', data: started(e1).data as never }).thenThrows('JOB_CANCELLED');
  });
  it('derives the job status from its executions', () => {
    expect(jobStatusOf(['pending', 'pending'], false)).to.equal('pending');
    expect(jobStatusOf(['running', 'completed'], false)).to.equal('running');
    expect(jobStatusOf(['completed', 'pending'], false)).to.equal('running');
    expect(jobStatusOf(['completed', 'completed'], false)).to.equal('completed');
    expect(jobStatusOf(['completed', 'timeout'], false)).to.equal('failed');
    expect(jobStatusOf(['completed', 'cancelled'], true)).to.equal('cancelled');
  });
});
