// The shape every module's pure core takes (after Emmett's decider): no I/O, no clock,
// no id generation — the command carries whatever time or ids it needs.
export type DomainEvent = { type: string; data: Record<string, unknown> };

export type Decider<State, Command, Event extends DomainEvent> = {
  initialState(): State;
  evolve(state: State, event: Event): State;
  decide(command: Command, state: State): Event[];
  /** Current schema version per event type (default 1); older stored versions are upcast on read. */
  schemaVersions?: Partial<Record<Event['type'], number>>;
};
