'use strict';
module.exports = require('./keycache');
