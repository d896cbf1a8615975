// The real Backstage backend with the four plugins whose databases the cutover moves; configured only by
// the --config files the test passes (tests/func/test_backstage_real.py).
const { createBackend } = require('@backstage/backend-defaults');

const backend = createBackend();
backend.add(require('@backstage/plugin-catalog-backend'));
backend.add(require('@backstage/plugin-auth-backend'));
backend.add(require('@backstage/plugin-scaffolder-backend'));
backend.add(require('@backstage/plugin-search-backend'));
backend.start();
