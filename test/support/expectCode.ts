// Awaits a promise that must reject with an AppError of `code`; returns the error.
import { expect } from 'chai';
import { AppError } from '../../infra/errors.ts';

export const expectCode = async (promise: Promise<unknown>, code: string): Promise<AppError> => {
  try {
    await promise;
  } catch (err) {
    expect(err).to.be.instanceOf(AppError);
    expect((err as AppError).code).to.equal(code);
    return err as AppError;
  }
  throw new Error(`expected ${code}, got success`);
};
