"""A real SMTP server on loopback for voxline's email tests (aiosmtpd).

Usage: python3 tests/smtp_server.py OUTDIR PORT

Behaviour by the recipient's local part:
  bounce*  -> 550 at RCPT (mailbox unavailable)
  flaky*   -> 451 at DATA for the first such message, accepted after
  anything else -> accepted
Each accepted message is written to OUTDIR/NNNN.eml. Prints READY once listening, then serves
until its standard input closes.
"""
import os
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, outdir):
        self.outdir = outdir
        self.count = 0
        self.flaky_failed = False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("bounce"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(a.startswith("flaky") for a in envelope.rcpt_tos) and not self.flaky_failed:
            self.flaky_failed = True
            return "451 4.3.0 temporary failure, try again later"
        self.count += 1
        path = os.path.join(self.outdir, "%04d.eml" % self.count)
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 accepted"


def main():
    outdir, port = sys.argv[1], int(sys.argv[2])
    controller = Controller(Handler(outdir), hostname="127.0.0.1", port=port)
    controller.start()
    print("READY", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
