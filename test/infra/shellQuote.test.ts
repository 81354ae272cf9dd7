import { execFileSync } from 'node:child_process';
import { expect } from 'chai';
import { shellQuote } from '../../infra/shellQuote.ts';

// What /bin/sh makes of `printf %s <quoted>`: the value back, byte for byte, and nothing run.
const echoed = (value: string): string => execFileSync('/bin/sh', ['-c', `printf %s ${shellQuote(value)}`], { encoding: 'utf8' });

describe('shellQuote', () => {
  const nasty = [
    "it's", '$(touch /tmp/opl-pwned)', '`id`', 'a; rm -rf /', 'x && y || z', '| cat /etc/passwd', '$HOME', '${PATH}',
    'line\nbreak', 'tab\there', '"double"', "''", '\\', '*', '~root', '-n', '', ' lead and trail ', 'ünïcødé', '!event', '#comment', '>out <in',
  ];
  for (const value of nasty) {
    it(`passes ${JSON.stringify(value)} to the shell as one word, unchanged`, () => {
      expect(echoed(value)).to.equal(value);
      expect(execFileSync('/bin/sh', ['-c', `set -- ${shellQuote(value)}; echo $#`], { encoding: 'utf8' }).trim()).to.equal('1');
    });
  }
  it('leaves plain words readable', () => expect(shellQuote('web-01.example:8080')).to.equal('web-01.example:8080'));
  it('refuses NUL', () => expect(() => shellQuote('a\u0000b')).to.throw(TypeError));
});
