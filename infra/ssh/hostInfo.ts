// What POST /systems/{id}/test reports about a (POSIX) host, gathered in one command.
// Each value is on its own line; fallbacks cover minimal images without whoami/hostname.
export const HOST_INFO_COMMAND = [
  `printf '%s\\n' "$(whoami 2>/dev/null || id -un)" "$(hostname 2>/dev/null || uname -n)" "$(uname -srm)"`,
  `(. /etc/os-release 2>/dev/null && printf '%s\\n' "$PRETTY_NAME") || true`,
].join('; ');

export type HostInfo = { whoami: string; hostname: string; osInfo: string };

/** null when the output is not what the command prints (not a POSIX shell, say). */
export const parseHostInfo = (stdout: string): HostInfo | null => {
  const [whoami = '', hostname = '', uname = '', pretty = ''] = stdout.split('\n').map((l) => l.trim());
  if (!whoami || !hostname || !uname) return null;
  return { whoami, hostname, osInfo: pretty ? `${pretty} (${uname})` : uname };
};
