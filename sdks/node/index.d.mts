// Types for `import ... from 'pandapush'`: the same declarations as for require.
export * from './index.cjs';
import * as pandapush from './index.cjs';
export default pandapush;
