#!/bin/sh
# A pandapush for the examples: in memory (nothing written but twistd.pid), seeded with the
# application and key every example uses by default, on http://localhost:3000 ($PORT).
#
#   examples/dev-server.sh                 # twistd from $PATH (pip install . in the repository)
#   TWISTD=.venv/bin/twistd examples/dev-server.sh
#
# Never for production: the key's secret is printed in this file.
export DATABASE=memory
export DEV_APPLICATION_ID=exampleApp0000000001
export DEV_KEY_ID=PSIDexampleKey000001
export DEV_KEY_SECRET=example-secret-0123456789
export AUTH_METHOD=none
if [ "$#" -eq 0 ]; then
    set -- --listen "tcp:${PORT:-3000}"
fi
exec ${TWISTD:-twistd} -n --pidfile= pandapush "$@"
