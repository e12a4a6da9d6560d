# frozen_string_literal: true

module Pandapush
  VERSION = "0.1.0"
end
